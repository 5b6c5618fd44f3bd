"""class-order: prompts, training split, validation split and checkpoint agree on which class each label is."""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch

from ..core import AuditTarget, Outcome, Skip, Status, audit
from ..locations import locate
from ..text import class_word_list, probe_classes

#: Items per split whose label is checked against the class folder they were read from.
MAX_ITEMS = 256


def key(name: str) -> str:
    """A class name as a prompt shows it: ``_`` a space, case and spacing ignored ("brush_hair" = "brush hair")."""
    return " ".join(str(name).replace("_", " ").split()).lower()


def describe(ref: list[str], other: list[str], what: str) -> str | None:
    """What is wrong with ``other`` as a labelling of the prompts' classes ``ref`` (None: the same list)."""
    if [key(c) for c in other] == [key(c) for c in ref]:
        return None
    shown = dict(zip(map(key, ref), ref))
    ref, other = [key(c) for c in ref], [key(c) for c in other]
    missing = [c for c in ref if c not in other]
    extra = [c for c in other if c not in ref]
    if missing and not extra and other == [c for c in ref if c not in missing]:
        first = ref.index(missing[0])
        return (f"{what} lacks {', '.join(repr(shown[c]) for c in missing[:3])}{' ...' if len(missing) > 3 else ''}: from label "
                f"{first} on, each of its labels names a later class of the prompts (labels shift by {len(missing)})")
    if extra:
        return f"{what} has {len(extra)} class(es) the prompts do not: {', '.join(map(repr, extra[:3]))}"
    if missing:
        return f"{what} lacks {', '.join(repr(shown[c]) for c in missing[:3])} and orders the rest differently"
    i = next(i for i, (a, b) in enumerate(zip(ref, other)) if a != b)
    return (f"{what} orders the same {len(ref)} names differently: its label {i} is {shown[other[i]]!r}, the prompts' "
            f"is {shown[ref[i]]!r}")


def checkpoint_classnames(checkpoint) -> tuple[list[str] | None, str]:
    """The class list a checkpoint (a path, or the dict it holds) stores, and how it was read."""
    if isinstance(checkpoint, (str, os.PathLike)):
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        where = f"checkpoint {checkpoint}"
    else:
        state, where = checkpoint, "the checkpoint"
    names = state.get("classnames") if isinstance(state, Mapping) else None
    return (list(names) if isinstance(names, (list, tuple)) else None), where


def folder_labels(ds, names: list[str], split: str) -> tuple[int, list[str]]:
    """Items whose meta path lies in a folder named after a class: is their label that class?"""
    checked, problems, keys = 0, [], {key(c) for c in names}
    for i in probe_classes(len(ds), MAX_ITEMS):
        item = ds[i]
        meta = item[2] if isinstance(item, (tuple, list)) and len(item) == 3 else None
        path = meta.get("path") if isinstance(meta, Mapping) else meta if isinstance(meta, (str, os.PathLike)) else None
        folder = Path(str(path)).parent.name if path else None
        if folder is None or key(folder) not in keys:
            continue
        label = int(item[1])
        checked += 1
        if not 0 <= label < len(names) or key(names[label]) != key(folder):
            said = names[label] if 0 <= label < len(names) else "no class"
            problems.append(f"{split} item {i} ({path}) is in folder {folder!r} but labelled {label}, the prompts' "
                            f"{said!r}")
    return checked, problems


def prompt_rows(target: AuditTarget) -> list[str]:
    """Prompt rows holding another class's words than their label's (needs the tokenizer)."""
    pl = getattr(target.model, "prompt_learner", None)
    tokens = getattr(pl, "tokenized_prompts", None)
    if target.tokenizer is None or not isinstance(tokens, torch.Tensor) or tokens.shape[0] != len(target.classnames):
        return []
    rows = [r.tolist() for r in tokens.cpu()]
    words = []
    for w in class_word_list(target):
        ids = target.tokenizer([w])[0]
        words.append(ids[1: int((ids > 0).sum()) - 1].tolist())

    def holds(row, sub):
        return any(row[s:s + len(sub)] == sub for s in range(len(row) - len(sub) + 1))

    problems = []
    for c, sub in enumerate(words):
        if sub and not holds(rows[c], sub):
            other = next((r for r in range(len(rows)) if r != c and holds(rows[r], sub)), None)
            if other is not None:
                problems.append(f"prompt row {other} holds the words of class {c} ({target.classnames[c]!r})")
    return problems


@audit(
    "class-order",
    title="Prompts, splits and checkpoint agree on the class order",
    problem="label i means class i of the prompts only if every list agrees: a validation folder that lacks a "
            "class (or sorts its folders otherwise) shifts its labels by one, a checkpoint trained on another "
            "class list loads without an error, and accuracy is measured against the wrong classes",
    fix="the prompts' class list, the training and validation splits' lists (and the folder each item was read "
        "from) and the checkpoint's stored class list are one list in one order",
    remediation="build the validation dataset with the training split's class list "
                "(FeatureDataset(val_dir, classnames=train_set.classnames)) or a classnames.txt in each folder; "
                "resume or evaluate only checkpoints whose stored classnames equal the data's",
)
def class_order(target: AuditTarget) -> Outcome:
    """Compare every class list the target knows of, and item labels with their class folders."""
    ref = list(target.classnames)
    lists: list[tuple[str, list[str]]] = []
    pl = getattr(target.model, "prompt_learner", None)
    if isinstance(getattr(pl, "classnames", None), (list, tuple)):
        lists.append(("prompt_learner.classnames", list(pl.classnames)))
    for split, ds in target.datasets():
        names = getattr(ds, "classnames", None)
        if isinstance(names, (list, tuple)):
            lists.append((f"the {split} split's class list", list(names)))
    evidence, problems, metrics = [f"the target's class names (label order): {len(ref)}"], [], {"classes": len(ref)}
    if target.checkpoint is not None:
        try:
            names, where = checkpoint_classnames(target.checkpoint)
        except Exception as e:  # noqa: BLE001: a missing or unreadable file is checkpoint-strictness's finding
            evidence.append(f"checkpoint {target.checkpoint} " + ("does not exist" if not os.path.exists(str(
                target.checkpoint)) else f"cannot be read ({type(e).__name__})") + ": its classes are not compared "
                "here; checkpoint-strictness reports it")
        else:
            if names is None:
                evidence.append(f"{where} stores no class list")
                problems.append(f"{where} stores no classnames: nothing says which class each learned tensor belongs to")
            else:
                lists.append((f"{where}'s classnames", names))
    for what, names in lists:
        found = describe(ref, names, what)
        evidence.append(f"{what}: {len(names)} names, " + ("the same order" if found is None else "DIFFERENT"))
        if found:
            problems.append(found)
    items = 0
    for split, ds in target.datasets():
        checked, wrong = folder_labels(ds, ref, split)
        items += checked
        if checked:
            evidence.append(f"{split}: {checked} items' labels checked against the class folder they were read from, "
                            f"{len(wrong)} wrong")
        problems += wrong[:3]
    rows = prompt_rows(target)
    problems += rows[:3]
    metrics.update(lists_compared=len(lists), items_checked=items, problems=len(problems))
    if not lists and not items:
        raise Skip("no second class list to compare with the target's (no prompt_learner.classnames, dataset "
                   "classnames, class folders or checkpoint)")
    first = target.datasets()[0][1] if target.datasets() else None
    location = locate(type(first)) if first is not None else locate(type(pl) if pl is not None else type(target.model))
    if problems:
        return Outcome(Status.FAIL, f"{len(problems)} disagreement(s): {problems[0]}", metrics, evidence + problems,
                       location)
    return Outcome(Status.PASS, f"{len(lists)} class list(s) and {items} item label(s) agree with the prompts' "
                   f"{len(ref)} classes in order", metrics, evidence, location)
