"""Where code lives, as a report writes it: a path relative to the working directory, and the
``file:line`` of a class or function (the line that matters, when a pattern says which)."""
from __future__ import annotations

import inspect
import os
import re

from torch import nn

#: The audits' own code; the planted faults inside it (a package) are audited code, not the audits'.
CHECKS = os.path.dirname(os.path.abspath(__file__))
FAULTS = os.path.join(CHECKS, "faults", "")


def relpath(path: str) -> str:
    """``path`` relative to the working directory when under it, else as given."""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return path if rel.startswith("..") else rel


def locate(obj, pattern: str | None = None) -> str | None:
    """``file:line`` of ``obj`` (a class, function or method), from ``inspect``.

    With ``pattern`` (a regex), the first line of its source matching it, so the report
    points at the line that matters (``register_buffer("tokenized_prompts"…``), not the ``def``.
    """
    obj = inspect.unwrap(getattr(obj, "__func__", obj))
    try:
        path = inspect.getsourcefile(obj)
        lines, start = inspect.getsourcelines(obj)
    except (TypeError, OSError):
        return None
    if path is None:
        return None
    line = start
    if pattern is not None:
        rx = re.compile(pattern)
        for i, text in enumerate(lines):
            if rx.search(text) and not text.lstrip().startswith("#"):
                line = start + i
                break
    return f"{relpath(path)}:{line}"


def video_location(model: nn.Module, pattern: str | None = None) -> str | None:
    """Where the model turns frame features into a video feature: ``encode_video``, else ``forward``."""
    cls = type(model)
    fn = getattr(cls, "encode_video", None) or cls.forward
    return locate(fn, pattern) if pattern else locate(fn)
