"""Config dataclasses from dicts, one way for all of them (``TrainConfig``, ``ExtractConfig``,
``ZeroShotConfig``, ``SweepConfig``): a key that is not a field is refused, naming the
closest field and every valid one, instead of vanishing or raising a bare ``TypeError``."""
from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping
from typing import Any, TypeVar

from .errors import VideoCoopError

C = TypeVar("C")


def field_names(cls: type) -> list[str]:
    """The fields of a config dataclass, in declaration order."""
    return [f.name for f in dataclasses.fields(cls)]


def known_fields(cls: type, values: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of ``values`` that name a field of ``cls``: for sources that hold more than
    one config's settings, such as an argparse namespace's ``vars``."""
    names = set(field_names(cls))
    return {k: v for k, v in values.items() if k in names}


def config_from_dict(cls: type[C], d: Mapping[str, Any], what: str = "config") -> C:
    """``cls(**d)``, refusing keys that are not fields of ``cls``.

    Args:
        cls: a dataclass.
        d: field values; missing fields keep their defaults.
        what: how the message names the config ("unknown <what> key(s)").

    Raises:
        VideoCoopError: unknown keys, with every valid key and, where one is close, the
            closest (``lrr: did you mean lr?``, as the CLI answers a mistyped flag).
    """
    valid = field_names(cls)
    unknown = sorted(set(d) - set(valid))
    if unknown:
        hints = [f"{k}: did you mean {m[0]}?" for k in unknown if (m := difflib.get_close_matches(k, valid, n=1))]
        raise VideoCoopError(f"unknown {what} key(s) {unknown}; valid keys: {', '.join(valid)}"
                             + "".join(f"; {h}" for h in hints))
    return cls(**d)


__all__ = ["config_from_dict", "field_names", "known_fields"]
