"""Reading and writing the small files of a run or a feature folder, safely.

Every file videocoop writes lands atomically: a temporary file beside it, flushed to
disk, then renamed over the target. A crash or a kill mid-write leaves the previous
version (or nothing), never a torn file. ``os.replace`` is atomic on POSIX and Windows
when both names are on one file system, which a sibling temporary file guarantees.
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import IO

from .errors import VideoCoopError


def read_json_object(path: str | os.PathLike, hint: str = "") -> dict:
    """A JSON object from ``path``; an unreadable, corrupt or non-object file is a
    VideoCoopError naming it, followed by ``hint`` (what to do about it)."""
    tail = f"; {hint}" if hint else ""
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise VideoCoopError(f"cannot read {path}: {e}{tail}") from e
    if not isinstance(value, dict):
        raise VideoCoopError(f"{path} is not a JSON object{tail}")
    return value


# Phrases of numpy's and torch's load errors that advise loading the file unsafely: never relayed.
_UNSAFE_ADVICE = ("allow_pickle", "weights_only", "trust", "pickle.load", "file an issue")


def load_error(path: str | os.PathLike, error: BaseException, holds: str) -> VideoCoopError:
    """The user error for a file that numpy or torch could not load safely.

    Says what is wrong with the file and what a valid one ``holds``; never relays the
    libraries' advice to unpickle a file we refused (pickled objects stay refused).
    """
    path = Path(path)
    kind = path.suffix or "array"
    text = str(error)
    unsupported = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if unsupported:
        reason = f"it holds a pickled {unsupported.group(1)} object, and videocoop never unpickles objects"
    elif "Object arrays cannot be loaded" in text:
        reason = "it holds Python objects (an object array), and videocoop never unpickles objects"
    elif path.is_file() and path.stat().st_size == 0:
        reason = "it is empty"
    else:
        first = text.strip().splitlines()[0] if text.strip() else ""
        if len(first) > 160:  # torch's run on with advice after the first sentence
            first = re.split(r"(?<=[.?])\s", first, maxsplit=1)[0]
        # the libraries' own words only where they describe the damage (numpy: "file seems not
        # fully written?"), not a generic IndexError from deep inside an unpickler
        safe = first and isinstance(error, (ValueError, RuntimeError)) and not any(a in text for a in _UNSAFE_ADVICE)
        reason = "it is damaged or in another format" + (f" ({type(error).__name__}: {first})" if safe else "")
    return VideoCoopError(f"{path} is not a valid {kind} file: {reason}; a valid one holds {holds}")


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


__all__ = ["atomic_write", "load_error", "read_json_object", "write_bytes", "write_json", "write_text"]
