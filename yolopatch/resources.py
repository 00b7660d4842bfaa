"""Where the shipped data lives: the wheel's yolopatch/_data, else the source checkout."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def data_dir(name: str) -> Path:
    """Return the directory ``templates`` or ``yaml_variants``.

    A wheel carries them under ``yolopatch/_data/<name>`` (hatch force-include); an editable
    install or a plain checkout resolves the package to the source tree, where they sit beside it.
    """
    packaged = Path(str(resources.files("yolopatch"))) / "_data" / name
    if packaged.is_dir():
        return packaged
    source = Path(__file__).resolve().parent.parent / name
    if source.is_dir():
        return source
    raise FileNotFoundError(f"yolopatch data folder {name!r} is missing from this installation")
