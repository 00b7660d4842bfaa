"""What `yolopatch check` asks of a tree, per codebase (``yolov5``, ``ultralytics``), the findings it
reports (``findings``), and the cache of the last clean result (``cache``)."""
