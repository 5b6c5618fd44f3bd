"""The custom prompts file (--initial-prompts-file): how prompts start, validated."""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from ..utils.errors import VideoCoopError
from ..utils.readers import read_json


@dataclass(frozen=True)
class PromptsFile:
    """The custom prompts file (``--initial-prompts-file``), validated.

    JSON object with these keys, all optional::

        {
          "default_prompt": "a video of a person",         # initial context for every class
          "class_prompts": {"Archery": "a video of an archer"},   # per class; implies CSC
          "display_names": {"ApplyEyeMakeup": "applying eye makeup"},  # words in the prompt
          "description": "free text, ignored"
        }

    A class given ``class_prompts`` starts from its own phrase; the others start from
    ``default_prompt`` (random when there is none). Every class the file names must exist
    in the data.
    """

    default_prompt: str | None = None  # the context every class starts from (CoOp's ctx_init)
    class_prompts: dict[str, str] = field(default_factory=dict)  # class -> its own initial phrase
    display_names: dict[str, str] = field(default_factory=dict)  # folder name -> words used in the prompt
    description: str = ""  # for the humans who read the file; not used
    source: str = "<dict>"  # where it was read from, for error messages

    KEYS: ClassVar[tuple[str, ...]] = ("default_prompt", "class_prompts", "display_names", "description")

    @classmethod
    def load(cls, path: str | os.PathLike) -> PromptsFile:
        """Read and validate a prompts file.

        Raises:
            VideoCoopError: missing or unreadable file, not UTF-8, invalid JSON (an
                InputError naming the line), unknown keys (the message lists the valid ones),
                values of the wrong type.
        """
        return cls.from_dict(read_json(path, "a prompts file holds a JSON object (docs/training.md)"),
                             source=os.fspath(path))

    @classmethod
    def from_dict(cls, data: Mapping, source: str = "<dict>") -> PromptsFile:
        """Validate a parsed prompts file (see the class docstring for the keys)."""
        if not isinstance(data, Mapping):
            raise VideoCoopError(f"prompts file {source} must hold a JSON object with keys {', '.join(cls.KEYS)}")
        unknown = sorted(set(data) - set(cls.KEYS))
        if unknown:
            raise VideoCoopError(f"unknown key(s) {unknown} in prompts file {source}; valid keys: {', '.join(cls.KEYS)}")

        def phrase(value, what: str) -> str:
            if not isinstance(value, str) or not value.strip():
                raise VideoCoopError(f"{what} in prompts file {source} must be a non-empty string, got {value!r}")
            return value

        def table(key: str) -> dict[str, str]:
            value = data.get(key, {})
            if not isinstance(value, Mapping):
                raise VideoCoopError(f"{key!r} in prompts file {source} must be an object class -> text, got {value!r}")
            return {str(k): phrase(v, f"{key}[{k!r}]") for k, v in value.items()}

        default = data.get("default_prompt")
        description = data.get("description", "")
        if not isinstance(description, str):
            raise VideoCoopError(f"'description' in prompts file {source} must be a string")
        return cls(
            default_prompt=None if default is None else phrase(default, "'default_prompt'"),
            class_prompts=table("class_prompts"),
            display_names=table("display_names"),
            description=description,
            source=source,
        )

    @property
    def csc(self) -> bool:
        """Per-class phrases need class-specific context."""
        return bool(self.class_prompts)

    def check_classes(self, classnames: Sequence[str]) -> None:
        """Every class the file names must be in the data.

        Raises:
            VideoCoopError: naming the absent classes and the data's classes.
        """
        known = set(classnames)
        for key in ("class_prompts", "display_names"):
            absent = sorted(set(getattr(self, key)) - known)
            if absent:
                raise VideoCoopError(
                    f"prompts file {self.source} names classes absent from the data in {key!r}: {absent}; "
                    f"the data's classes are {list(classnames)}"
                )

    def prompt_kwargs(self, classnames: Sequence[str]) -> dict:
        """``ctx_init`` and ``display_names`` for :class:`PromptLearner` / ``VideoFeatureCLIP``."""
        self.check_classes(classnames)
        ctx_init: str | dict[str, str] | None = self.default_prompt
        if self.class_prompts:
            ctx_init = {c: self.class_prompts.get(c, self.default_prompt) for c in classnames}
            ctx_init = {c: p for c, p in ctx_init.items() if p is not None}
        return {"ctx_init": ctx_init, "display_names": dict(self.display_names) or None}

    def to_dict(self) -> dict:
        """The file's content, as :meth:`from_dict` reads it."""
        out: dict = {}
        if self.description:
            out["description"] = self.description
        if self.default_prompt is not None:
            out["default_prompt"] = self.default_prompt
        for key in ("class_prompts", "display_names"):
            if getattr(self, key):
                out[key] = dict(getattr(self, key))
        return out
