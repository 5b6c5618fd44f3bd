"""Config dataclasses from dicts, one way for all of them (``TrainConfig``, ``ExtractConfig``,
``ZeroShotConfig``, ``SweepConfig``): a key that is not a field is refused, naming the
closest field and every valid one, and a value of another type than its field's is refused
naming the field and the type, instead of vanishing or raising a bare ``TypeError`` deep in
the code that uses it."""
from __future__ import annotations

import dataclasses
import difflib
import json
import os
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from .errors import InputError, VideoCoopError
from .readers import describe, fits, show

C = TypeVar("C")


def field_names(cls: type) -> list[str]:
    """The fields of a config dataclass, in declaration order."""
    return [f.name for f in dataclasses.fields(cls)]


def known_fields(cls: type, values: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of ``values`` that name a field of ``cls``: for sources that hold more than
    one config's settings, such as an argparse namespace's ``vars``."""
    names = set(field_names(cls))
    return {k: v for k, v in values.items() if k in names}


def config_from_dict(cls: type[C], d: Mapping[str, Any], what: str = "config",
                     path: str | os.PathLike | None = None) -> C:
    """``cls(**d)``, refusing keys that are not fields of ``cls`` and values of another type.

    Args:
        cls: a dataclass whose fields carry type hints (``int``, ``float``, ``str | None``,
            ``list[int]``, another config class, ...).
        d: field values; missing fields keep their defaults.
        what: how the message names the config ("unknown <what> key(s)").
        path: the file ``d`` was read from, which the message names first (an
            :class:`~videocoop.utils.errors.InputError`); None for flags and dicts.

    Raises:
        VideoCoopError: unknown keys, with every valid key and, where one is close, the
            closest (``lrr: did you mean lr?``, as the CLI answers a mistyped flag); a value
            that does not fit its field (``key "epochs": found "1" (a string), expected an
            integer``). An InputError naming ``path`` when given.
    """
    valid = field_names(cls)
    unknown = sorted(set(d) - set(valid))
    if unknown:
        hints = [f"{k}: did you mean {m[0]}?" for k in unknown if (m := difflib.get_close_matches(k, valid, n=1))]
        problem = (f"unknown {what} key(s) {unknown}; valid keys: {', '.join(valid)}"
                   + "".join(f"; {h}" for h in hints))
        raise InputError(path, problem) if path is not None else VideoCoopError(problem)
    hints = typing.get_type_hints(cls)
    for key, value in d.items():
        if not fits(value, hints[key]):
            problem = f"found {show(value)}, expected {describe(hints[key])} ({cls.__name__}.{key})"
            if path is not None:
                raise InputError(path, problem, at=f"key {json.dumps(key)}")
            raise VideoCoopError(f"{what} key {json.dumps(key)}: {problem}")
    return cls(**d)


__all__ = ["config_from_dict", "field_names", "known_fields"]
