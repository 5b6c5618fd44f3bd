"""Another class list for a model built per class list, as the CoOp layout is: a ready ``for_classes``
declaration (:class:`~checks.AuditTarget`; the class-list-response audit calls it)."""
from __future__ import annotations

import weakref

import torch
from torch import nn


def rebuilt_for_classes(build, classnames):
    """A ``for_classes`` declaration for a model built per class list (the CoOp layout): ``build(names)`` makes
    the model over those classes (the RNG left as it was), and every tensor the given model learns is copied into
    it by name; a per-class one (class-specific context, ``[n_cls, ...]``: its first dimension follows the class
    count) has its rows picked by class. ``classnames``: the class list of the model the target hands over.

    ``AuditTarget(for_classes=checks.contract.rebuilt_for_classes(lambda names: MyModel(names, clip, tok), names))``
    """
    lists = weakref.WeakKeyDictionary()  # the class list each model this made was built for
    per_class: set[str] = set()
    learned: list[bool] = []

    def made(names):
        with torch.random.fork_rng(devices=[]):
            return build(list(names))

    def learn(model, other, n_other):
        """The learned tensors whose first dimension follows the class count: ``other`` was built for another count."""
        shapes = {k: q.shape for k, q in other.named_parameters()}
        n = len(lists.get(model, classnames))
        per_class.update(k for k, p in model.named_parameters() if p.requires_grad and k in shapes and p.dim()
                         and p.shape[0] == n and shapes[k][0] == n_other and shapes[k][1:] == p.shape[1:])
        learned.append(True)

    def for_classes(model: nn.Module, names: list[str]) -> nn.Module:
        old = lists.get(model, list(classnames))
        new = made(names)
        if not learned:
            learn(model, new, len(names)) if len(names) != len(old) else learn(model, made(names[:1]), 1)
        first = next(iter(model.parameters()), None)
        new = new.to(first.device) if first is not None else new
        rows = [old.index(n) for n in names]
        params = dict(new.named_parameters())
        with torch.no_grad():
            for name, p in model.named_parameters():
                if p.requires_grad and name in params:
                    params[name].copy_(p[rows] if name in per_class else p)
        lists[new] = list(names)
        return new

    return for_classes
