"""The package's user-facing exceptions."""
from __future__ import annotations

import os


class VideoCoopError(ValueError):
    """A user error: bad input, a missing file, an impossible configuration.

    The message names the bad value and the valid options; the CLI prints it without a
    traceback and exits with a usage error.
    """


class ConfigError(VideoCoopError):
    """A config value out of range, of an unknown choice or naming a missing file; ``key`` is its
    field, so a caller that knows where the value came from (a config file) can say so."""

    def __init__(self, key: str, message: str):
        self.key = key
        super().__init__(message)


class InputError(VideoCoopError):
    """A file a command reads is wrong (:mod:`videocoop.utils.readers` and the readers built on it).

    The message starts with the file, then where in it (a key, a line, a byte), then what
    was found and what was expected, then what to do::

        data/train/features.json, key "clip_model": found 32 (a number), expected a string: ...

    Args:
        path: the file (kept as ``.path``).
        problem: what is wrong: the value found and what was expected.
        at: where in the file: ``key "epochs"``, ``line 3``, ``byte 17``.
        fix: what to do about it.
    """

    def __init__(self, path: str | os.PathLike, problem: str, *, at: str | None = None, fix: str | None = None):
        self.path = os.fspath(path)
        self.at, self.problem, self.fix = at, problem, fix
        super().__init__(f"{self.path}{f', {at}' if at else ''}: {problem}{f'; {fix}' if fix else ''}")


__all__ = ["ConfigError", "InputError", "VideoCoopError"]
