"""The readers of small input files, below every layer that reads one.

Each kind of input has one reader; this module holds those every layer shares, and the
others are built on them (feature files and manifests in :mod:`videocoop.data`, checkpoints
and run logs in :mod:`videocoop.train`). A reader checks encoding, type, shape and range and
raises :class:`~videocoop.utils.errors.InputError` naming the file, where in it, what it
found and what was expected (docs/inputs.md lists the messages). Nothing here ever unpickles
an object: numpy reads with ``allow_pickle=False``, torch with ``weights_only=True``.

- text: :func:`read_text` (UTF-8, with or without a byte-order mark; any other encoding is
  refused with the first bad byte's offset), :func:`read_lines` (the text lists: class
  names, zero-shot templates, base-class lists).
- JSON: :func:`read_json`, :func:`read_json_object` (a record whose fields' types are checked
  against a table: :func:`check_fields`). :func:`fits` and :func:`describe` judge a value
  against a type hint, for the records and for the config dataclasses alike.
- arrays: :func:`load_array` (``.npy``; the header checked against the file before anything
  is read), :func:`load_torch` (``.pt``), :func:`load_error` (the message for a file numpy or
  torch refused).
"""
from __future__ import annotations

import codecs
import json
import math
import numbers
import os
import re
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError

SAVE_AS_UTF8 = "save it as UTF-8 (UTF-8 with a byte-order mark is read too)"
_OTHER_BOMS = ((codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"), (codecs.BOM_UTF16_LE, "UTF-16"),
               (codecs.BOM_UTF16_BE, "UTF-16"))


# --------------------------------------------------------------------------- text


def read_bytes(path: str | os.PathLike) -> bytes:
    """The bytes of ``path``; a missing or unreadable file (a folder, a symlink loop) is an InputError."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError as e:
        raise InputError(path, "no such file") from e
    except IsADirectoryError as e:
        raise InputError(path, "is a folder, not a file") from e
    except OSError as e:
        raise InputError(path, f"cannot be read ({e.strerror or e})") from e


def read_text(path: str | os.PathLike) -> str:
    """The text of a UTF-8 file, with or without a byte-order mark (a spreadsheet's "CSV UTF-8").

    Raises:
        InputError: another encoding (a UTF-16/32 byte-order mark, or a byte that is not
            UTF-8: its line and offset), a NUL byte (a binary file), or an unreadable file.
    """
    data = read_bytes(path)
    for bom, name in _OTHER_BOMS:
        if data.startswith(bom):
            raise InputError(path, f"{name} text (it starts with a {name} byte-order mark), not UTF-8", at="byte 0",
                             fix=SAVE_AS_UTF8)
    start = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        text = data[start:].decode("utf-8")
    except UnicodeDecodeError as e:
        offset = start + e.start
        raise InputError(path, f"found byte 0x{data[offset]:02x}, which is not UTF-8 (the file is in another "
                               f"encoding, e.g. Latin-1 or Windows-1252)", at=_position(data, offset),
                         fix=SAVE_AS_UTF8) from e
    nul = data.find(b"\0", start)
    if nul >= 0:
        raise InputError(path, "found a NUL byte: not UTF-8 text (a binary file, or UTF-16 without a byte-order mark)",
                         at=_position(data, nul), fix=SAVE_AS_UTF8)
    return text


def _position(data: bytes, offset: int) -> str:
    line = data.count(b"\n", 0, offset) + 1
    return f"line {line}, byte {offset}"


def read_lines(path: str | os.PathLike, *, comments: bool = True) -> list[str]:
    """A text list (class names, templates, base classes): one entry per line, stripped; blank
    lines skipped, and with ``comments`` lines starting with ``#``. Encoding as :func:`read_text`."""
    lines = (line.strip() for line in read_text(path).splitlines())
    return [line for line in lines if line and not (comments and line.startswith("#"))]


# --------------------------------------------------------------------------- values against type hints


def _union_args(hint) -> tuple | None:
    return typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else None


def fits(value: Any, hint: Any) -> bool:
    """Whether a value read from JSON fits a type hint: ``int`` (not a bool), ``float`` (an int
    too; finite), ``numbers.Real`` (any number, NaN and inf too), ``str``, ``bool``, ``None``,
    unions, ``list[X]``/``tuple[X, ...]`` (a JSON list), ``dict[K, V]``/``Mapping``, or any
    class (``isinstance``)."""
    if hint is Any or hint is object:
        return True
    if (args := _union_args(hint)) is not None:
        return any(fits(value, a) for a in args)
    if hint is None or hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if hint is numbers.Real:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    origin, args = typing.get_origin(hint) or hint, typing.get_args(hint)
    if origin in (list, tuple, Sequence):
        if not isinstance(value, (list, tuple)):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(fits(v, a) for v, a in zip(value, args))
        return not args or all(fits(v, args[0]) for v in value)
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            return False
        return not args or all(fits(k, args[0]) and fits(v, args[1]) for k, v in value.items())
    return isinstance(value, origin) if isinstance(origin, type) else True


_SINGULAR = {int: "an integer", float: "a finite number", str: "a string", bool: "true or false", type(None): "null",
             numbers.Real: "a number"}
_PLURAL = {int: "integers", float: "finite numbers", str: "strings", bool: "true/false values", numbers.Real: "numbers"}


def describe(hint: Any) -> str:
    """A type hint in words: ``int | None`` -> "an integer or null", ``list[str]`` -> "a list of strings"."""
    if (args := _union_args(hint)) is not None:
        return " or ".join(describe(a) for a in sorted(args, key=lambda a: a is type(None)))
    if hint in _SINGULAR or hint is None:
        return _SINGULAR[type(None) if hint is None else hint]
    origin, args = typing.get_origin(hint) or hint, typing.get_args(hint)
    if origin in (list, tuple, Sequence):
        return f"a list of {_plural(args[0])}" if args else "a list"
    if origin in (dict, Mapping):
        return f"an object of {_plural(args[1])}" if args else "an object"
    name = getattr(origin, "__name__", str(origin))
    return {"Tensor": "a tensor"}.get(name, f"a {name}")


def _plural(hint: Any) -> str:
    if hint in _PLURAL:
        return _PLURAL[hint]
    words = describe(hint)
    return words.split(" ", 1)[1] + "s" if words.startswith(("a ", "an ")) and " or " not in words else words


def show(value: Any) -> str:
    """A value as the user wrote it in a JSON file, and its kind: ``"1" (a string)``, ``null``."""
    if value is None:
        return "null"
    kind = ("true/false" if isinstance(value, bool) else "a number" if isinstance(value, (int, float))
            else "a string" if isinstance(value, str) else "a list" if isinstance(value, (list, tuple))
            else "an object" if isinstance(value, Mapping) else f"a {type(value).__name__}")
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return f"{text if len(text) <= 60 else text[:57] + '...'} ({kind})"


def check_fields(record: Mapping, fields: Mapping[str, Any], path: str | os.PathLike, *, required: Sequence[str] = (),
                 notes: Mapping[str, str] | None = None, fix: str | None = None, prefix: str = "",
                 at: str | None = None) -> None:
    """Check a JSON record's fields against type hints (``fields``); keys not listed are left alone.

    ``prefix`` goes before the keys' names (a nested record's ``best.``), ``at`` before the key
    (a record on one line of a file: ``line 3``).

    Raises:
        InputError: a ``required`` key missing, or a value that does not :func:`fit <fits>` its
            hint: ``path, key "dim": found "32" (a string), expected an integer (note)``.
    """
    notes, where = notes or {}, f"{at}, " if at else ""
    for key in required:
        if key not in record:
            raise InputError(path, f"no key {json.dumps(prefix + key)}; expected {describe(fields[key])}"
                                   + (f" ({notes[key]})" if key in notes else ""), at=at, fix=fix)
    for key, hint in fields.items():
        if key in record and not fits(record[key], hint):
            raise InputError(path, f"found {show(record[key])}, expected {describe(hint)}"
                                   + (f" ({notes[key]})" if key in notes else ""),
                             at=f"{where}key {json.dumps(prefix + key)}", fix=fix)


# --------------------------------------------------------------------------- JSON


def read_json(path: str | os.PathLike, fix: str | None = None) -> Any:
    """A JSON value from a UTF-8 file (:func:`read_text`); a syntax error names its line and column."""
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(path, f"not valid JSON: {e.msg}", at=f"line {e.lineno}, column {e.colno}", fix=fix) from e
    except (ValueError, RecursionError) as e:  # a number past Python's digit limit, nesting past the stack
        raise InputError(path, f"not JSON videocoop can read ({type(e).__name__}: {str(e)[:100]})", fix=fix) from e


def read_json_object(path: str | os.PathLike, hint: str = "", *, fields: Mapping[str, Any] | None = None,
                     required: Sequence[str] = (), notes: Mapping[str, str] | None = None) -> dict:
    """A JSON object (a record) from ``path``, its ``fields`` checked (:func:`check_fields`).

    ``hint`` says what to do about a bad file, and ends every message about it.
    """
    value = read_json(path, hint or None)
    if not isinstance(value, dict):
        raise InputError(path, f"holds {show(value)}, not a JSON object", fix=hint or None)
    if fields:
        check_fields(value, fields, path, required=required, notes=notes, fix=hint or None)
    return value


# --------------------------------------------------------------------------- arrays

# Phrases of numpy's and torch's load errors that advise loading the file unsafely: never relayed.
_UNSAFE_ADVICE = ("allow_pickle", "weights_only", "trust", "pickle.load", "file an issue")


def load_error(path: str | os.PathLike, error: BaseException, holds: str, fix: str | None = None) -> InputError:
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
    elif isinstance(error, FileNotFoundError):
        reason = "no such file"
    elif path.is_file() and path.stat().st_size == 0:
        reason = "it is empty"
    else:
        first = text.strip().splitlines()[0] if text.strip() else ""
        if len(first) > 160:  # torch's run on with advice after the first sentence
            first = re.split(r"(?<=[.?])\s", first, maxsplit=1)[0][:160]
        # the libraries' own words only where they describe the damage, not a generic
        # IndexError from deep inside an unpickler
        safe = first and isinstance(error, (ValueError, RuntimeError)) and not any(a in text for a in _UNSAFE_ADVICE)
        reason = "it is damaged or in another format" + (f" ({type(error).__name__}: {first})" if safe else "")
    return InputError(path, f"not a valid {kind} file: {reason}; a valid one holds {holds}", fix=fix)


def _npy_header(path: Path, holds: str, fix: str | None) -> None:
    """Refuse an ``.npy`` whose header announces objects or more bytes than the file holds,
    before numpy allocates anything for it."""
    try:
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            read_header = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
            shape, _, dtype = read_header[version](fh)
            offset, size = fh.tell(), os.fstat(fh.fileno()).st_size
    except Exception:  # noqa: BLE001: not an .npy header at all; np.load says how
        return
    if dtype.hasobject:
        raise InputError(path, f"not a valid .npy file: it holds Python objects (an object array), and videocoop "
                               f"never unpickles objects; a valid one holds {holds}", fix=fix)
    need = math.prod(shape) * dtype.itemsize
    if size - offset < need:
        raise InputError(path, f"not a valid .npy file: it is cut short ({size - offset} bytes of data where its header "
                               f"announces {need}: {dtype} {list(shape)}); a valid one holds {holds}", fix=fix)


def first_nonfinite(array: np.ndarray, rows: int = 1 << 16) -> int | None:
    """The first row (flat index of a 1-d array) holding NaN or inf, read in chunks of ``rows``
    (a memory map is never read whole at once); None when every value is finite."""
    if array.dtype.kind not in "fc":
        return None
    if array.ndim == 0:
        return None if np.isfinite(array) else 0
    for start in range(0, array.shape[0], rows):
        ok = np.isfinite(np.asarray(array[start:start + rows]))  # [rows, ...]
        bad = np.flatnonzero(~ok.reshape(ok.shape[0], -1).all(axis=1))
        if bad.size:
            return start + int(bad[0])
    return None


def load_array(path: str | os.PathLike, holds: str, *, ndim: int | None = None, kinds: str = "iuf",
               finite: bool = True, mmap_mode: str | None = None, fix: str | None = None) -> np.ndarray:
    """An ``.npy`` array, checked: never unpickled, not cut short, of a numeric ``kinds`` (numpy's
    dtype kinds: ``i`` signed, ``u`` unsigned, ``f`` float), ``ndim`` dimensions, and (``finite``)
    no NaN or inf (checked in chunks, so a memory map stays one).

    Raises:
        InputError: naming the file, what it holds and what a valid one ``holds``.
    """
    path = Path(path)
    _npy_header(path, holds, fix)
    try:
        array = np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
    except Exception as e:  # numpy raises many types for a damaged or foreign file
        raise load_error(path, e, holds, fix) from e
    if not isinstance(array, np.ndarray):  # an .npz archive
        array.close()
        raise InputError(path, f"not a valid .npy file: it is an .npz archive of several arrays; a valid one holds "
                               f"{holds}", fix=fix)
    if array.dtype.kind not in kinds or array.dtype.names is not None:
        raise InputError(path, f"holds a {array.dtype} array, not numbers; a valid one holds {holds}", fix=fix)
    if ndim is not None and array.ndim != ndim:
        raise InputError(path, f"holds an array of shape {list(array.shape)} ({array.ndim}-d); a valid one holds {holds}",
                         fix=fix)
    if finite and (row := first_nonfinite(array)) is not None:
        raise InputError(path, f"holds NaN or inf (first in row {row}); a valid one holds {holds}", fix=fix)
    return array


def load_torch(path: str | os.PathLike, holds: str, *, allowed: Sequence = (), fix: str | None = None) -> Any:
    """``torch.load`` with ``weights_only``: tensors, plain containers and the ``allowed``
    classes only (any other pickled object is refused, never built), on the CPU.

    Raises:
        InputError: a missing, empty, damaged or foreign file, or one holding other objects.
    """
    import torch

    try:
        with torch.serialization.safe_globals(list(allowed)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt or foreign files raise many types
        raise load_error(path, e, holds, fix) from e


__all__ = ["SAVE_AS_UTF8", "check_fields", "describe", "first_nonfinite", "fits", "load_array", "load_error",
           "load_torch", "read_bytes", "read_json", "read_json_object", "read_lines", "read_text", "show"]
