"""Writing the files of a run or a feature folder, safely (their readers: :mod:`.readers`).

Every file videocoop writes lands atomically: a temporary file beside it, flushed to
disk, then renamed over the target. A crash or a kill mid-write leaves the previous
version (or nothing), never a torn file. ``os.replace`` is atomic on POSIX and Windows
when both names are on one file system, which a sibling temporary file guarantees.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO


def _fsync_dir(path: Path) -> None:
    # the rename itself lives in the directory: sync it so the new name survives a power cut
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # Windows cannot open directories; its rename is durable enough
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None], *, make_dirs: bool = False) -> Path:
    """Call ``write(fh)`` on a temporary file beside ``path``, fsync it, rename it over ``path``.

    On any error the temporary file is removed and ``path`` is left as it was. With
    ``make_dirs``, the missing folders above ``path`` are created first (an extraction's
    class folders, a predictions file's folder); without it a missing folder is an error.
    """
    path = Path(path)
    if make_dirs:
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def write_bytes(path: str | os.PathLike, data: bytes, *, make_dirs: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write` for ``make_dirs``)."""
    return atomic_write(path, lambda fh: fh.write(data), make_dirs=make_dirs)


def write_text(path: str | os.PathLike, text: str, *, make_dirs: bool = False) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_write` for ``make_dirs``)."""
    return write_bytes(path, text.encode("utf-8"), make_dirs=make_dirs)


def write_json(path: str | os.PathLike, data, indent: int | None = 2) -> Path:
    """Write ``data`` as JSON to ``path`` atomically."""
    return write_text(path, json.dumps(data, indent=indent) + "\n")


__all__ = ["atomic_write", "write_bytes", "write_json", "write_text"]
