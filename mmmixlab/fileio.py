"""Writing files so a crash never leaves half of one: write beside it, then rename.

``os.replace`` is atomic on POSIX and Windows within one file system, so a reader (or a resumed
run) sees either the old file or the whole new one. Every checkpoint, cache, manifest and
result file of the project is written through :func:`atomic_write`.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path", "atomic_write", "write_json"]


@contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on an error
    it is removed and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write(path, data: bytes | str, encoding: str = "utf-8") -> Path:
    """``data`` into ``path`` atomically."""
    with atomic_path(path) as tmp:
        if isinstance(data, str):
            tmp.write_text(data, encoding=encoding)
        else:
            tmp.write_bytes(data)
    return Path(path)


def write_json(obj, path, indent: int = 2) -> Path:
    """``obj`` as JSON (sorted keys) into ``path`` atomically."""
    return atomic_write(path, json.dumps(obj, indent=indent, sort_keys=True))
