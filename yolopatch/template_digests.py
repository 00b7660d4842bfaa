"""Write templates/digests.json: each template's marker digest, recorded for its exact text.

`status`, `revert` and `check` compare the digest in each inserted module's marker with the template's
own; computing the 21 of them means parsing and printing every template with libcst. The table keeps
them, keyed by module and by the SHA-256 of the template text, so a template edited since is computed
again (and tests/test_template_digests.py fails until this is rerun from a source checkout).

    python -m yolopatch.template_digests
"""

from __future__ import annotations

import json
from typing import Any, Dict

from yolopatch import catalog
from yolopatch.resources import data_dir
from yolopatch.transforms import common_py


def table() -> Dict[str, Any]:
    """The digests.json contents for the templates as they are now, computed (never read back)."""
    digests = {}
    for spec in catalog.all_modules():
        template = common_py.Template(spec.key, spec.version, spec.class_name, spec.source)  # no recorded digest
        digests[spec.key] = {"source_sha256": catalog.source_sha256(spec.source),
                             "digest": common_py.digest(common_py.template_statements(template))}
    return {"about": "written by python -m yolopatch.template_digests; rerun it after editing a template", "digests": digests}


def main() -> None:
    path = data_dir("templates") / catalog.DIGESTS_FILE
    path.write_text(json.dumps(table(), indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
