"""yolopatch: put attention modules into YOLOv5 correctly, and take them out again."""

__version__ = "0.1.0"
