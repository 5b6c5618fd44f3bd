"""prompt-tokenization: each prompt holds its whole class name, its EOT, and pools there."""
from __future__ import annotations

import re

import torch

from .. import reference
from ..core import AuditTarget, Outcome, Status, audit
from ..locations import locate
from ..text import class_word_list, clean_clip, eot_token_id, prompt_sets, text_location


def find(row: list[int], sub: list[int]) -> int:
    """Start of the first occurrence of ``sub`` in ``row``, or -1."""
    for s in range(len(row) - len(sub) + 1):
        if row[s:s + len(sub)] == sub:
            return s
    return -1


#: Characters of punctuation a BPE merge may glue to a name's ends (")." is one).
MERGE_SLACK = 8


def _text(decode, ids: list[int]) -> str:
    """The text of ``ids`` without whitespace (CLIP's decode puts a space at every word end)."""
    return "".join(decode(ids).split())


def find_class(row: list[int], sub: list[int], decode) -> tuple[int, int]:
    """``[start, end)`` of a class's tokens ``sub`` in ``row`` (the ids before the EOT), or ``(-1, -1)``.

    BPE merges runs of punctuation: in ``"X X hurling (sport)."`` the name's last token ``')'``
    and the ``'.'`` after it become one token ``').'``, so the name's own ids are not all in
    the prompt although nothing is cut. Where the ids do not match, the class is the first
    run of prompt tokens whose text is the name's, give or take punctuation merged at its
    ends (all the tokenizer can do to it); ``decode`` None: the ids only.
    """
    start = find(row, sub)
    if start >= 0 or decode is None:
        return (start, start + len(sub)) if start >= 0 else (-1, -1)
    name = _text(decode, sub)
    whole = re.compile(r"[^\w]*" + re.escape(name) + r"[^\w]*")
    for s in range(len(row)):
        for e in range(s + 1, len(row) + 1):
            text = _text(decode, row[s:e])
            if whole.fullmatch(text):
                return s, e
            if len(text) > len(name) + MERGE_SLACK:
                break
    return -1, -1


def find_rows(prompt: torch.Tensor, emb: torch.Tensor) -> int:
    """Start of the first run of ``prompt`` rows ``[L, w]`` equal to ``emb`` ``[k, w]``, or -1.

    CoOp tokenizes ``"X X X X name."`` whatever the class position and only rearranges the
    embeddings, so the position is read from the prompt embeddings, not from the ids.
    """
    same = torch.isclose(prompt.float()[:, None], emb.float()[None], rtol=1e-3, atol=1e-6).all(-1)  # [L, k]
    k = emb.shape[0]
    for s in range(prompt.shape[0] - k + 1):
        if bool(same[s:s + k].diagonal().all()):
            return s
    return -1


@audit(
    "prompt-tokenization",
    title="Prompts fit, with the class where the layout says and the EOT pooled",
    problem="a prompt longer than the context is cut silently (the class name loses tokens, the EOT is "
            "forced to the last slot), or the pooled index is not the EOT for this tokenizer",
    fix="every class's words appear whole at the configured position, each prompt has one EOT, and "
        "argmax-style pooling reads that EOT",
    remediation="use fewer context tokens or shorter display names; for tokenizers whose EOT is not the "
                "largest id, pool at (tokens == eot_id).argmax(-1)",
    needs=("text", "clip", "tokenizer"),
)
def prompt_tokenization(target: AuditTarget) -> Outcome:
    """Re-tokenise each class's words: whole in ``tokenized_prompts``, placed as said in the prompt embeddings."""
    text = reference.tower(clean_clip(target))
    token_embedding = text.token_embedding
    context_length = text.positional_embedding.shape[0]
    pl = getattr(target.model, "prompt_learner", None)
    te = getattr(target.model, "text_encoder", None)
    sets, id_sets = prompt_sets(target)  # [K, n_cls, L, width], [K, n_cls, L]: K prompts per class (1 for CoOp)
    eot_id = eot_token_id(target)
    n_ctx = context_count(pl) if pl is not None else None
    # the layout's word for where the class goes; CoOp's default (end) when it has context slots and
    # says nothing; None: a layout that states no position (learned tokens on both sides), not judged
    position = getattr(pl, "class_token_position", "end" if n_ctx else None)
    # Context slots before the class in each CoOp layout: middle puts the first n_ctx // 2
    # there, so with one slot it is laid out as front is (CoOp splits the same way).
    before_expected = {"end": n_ctx, "middle": n_ctx // 2, "front": 0}.get(position) if n_ctx and position else None
    decode = getattr(target.tokenizer, "decode", None)
    words = class_word_list(target)
    problems, evidence = [], []
    n_eot_bad = n_pool_bad = n_missing = n_misplaced = n_merged = 0
    pools_by_id = getattr(te, "eot_token_id", None) is not None
    class_ids = []
    for w in words:
        ids = target.tokenizer([w])[0]
        class_ids.append(ids[1: int((ids > 0).sum()) - 1].tolist())  # the words' ids between SOS and EOT
    n_sets = id_sets.shape[0]
    for k, c in ((k, c) for k in range(n_sets) for c in range(len(words))):  # every prompt of every class
        tokens, prompts, name = id_sets[k].cpu().long(), sets[k], target.classnames[c]
        label = f"{name!r}" + (f" (prompt {k + 1} of {n_sets})" if n_sets > 1 else "")
        row = tokens[c].tolist()
        eots = [i for i, t in enumerate(row) if t == eot_id] if eot_id is not None else [int(tokens[c].argmax())]
        if len(eots) != 1:
            n_eot_bad += 1
            problems.append(f"{label}: {len(eots)} EOT tokens")
            continue
        eot = eots[0]
        if int(tokens[c].argmax()) != eot and not pools_by_id:
            n_pool_bad += 1
            problems.append(f"{label}: argmax of the ids is position {int(tokens[c].argmax())}, the EOT is at {eot}")
        sub = class_ids[c]
        start, end = find_class(row[:eot], sub, decode)
        if start < 0:
            n_missing += 1
            kept = sum(1 for t in sub if t in row[:eot])
            why = (f"cut at the context length {context_length} (the EOT is in its last slot)" if eot == context_length - 1
                   else "not together in the prompt's ids")
            problems.append(f"{label}: its {len(sub)} tokens are not all in the prompt ({kept} found before the "
                            f"EOT at {eot}): {why}")
            continue
        merged = row[start:end] != sub  # the name's last (or first) token merged with punctuation
        n_merged += merged
        merged_note = f"; matched by text: BPE merged its ends into {decode(row[start:end]).split()!r}" if merged else ""
        with torch.no_grad():
            at = find_rows(prompts[c], token_embedding(torch.tensor(row[start:end], device=token_embedding.weight.device))
                           .to(prompts.device))
        start, end = (at, at + end - start) if at >= 0 else (start, end)  # not in the embeddings: the ids say
        before = start - 1  # positions between SOS and the class: the context slots before it
        where = ("front" if before == 0 else "end" if before == n_ctx else "middle") if n_ctx else \
            ("front" if start == 1 else "end" if eot - end <= 1 else "middle")
        slots = f"after {before} of {n_ctx} context slots" if n_ctx else f"read as {where!r}"
        misplaced = position is not None and (before != before_expected if before_expected is not None
                                              else where != position)
        if misplaced:
            n_misplaced += 1
            said = f" ({before_expected} before it)" if before_expected is not None else ""
            problems.append(f"{label}: class tokens at {start}..{end - 1}, {slots} ({where} layout); "
                            f"the layout says {position!r}{said}")
        if k == 0 and (c < 3 or (merged and n_merged == 1)):
            evidence.append(f"{label}: {end - start} class tokens at {start}..{end - 1} ({slots}, read from the "
                            f"{'prompt embeddings' if at >= 0 else 'ids'}), EOT at {eot}{merged_note}")
    evidence.append(f"EOT id {eot_id}; pooling by {'id' if pools_by_id else 'argmax of the ids'}; "
                    f"prompt length {id_sets.shape[-1]}; class position {position!r}"
                    + (f" ({before_expected} of {n_ctx} context slots before the class)" if before_expected is not None
                       else ""))
    if n_merged:
        evidence.append(f"{n_merged} class(es) end or start in punctuation that BPE merged with the prompt's "
                        f"next or previous token: matched by their text, not their ids")
    evidence += problems
    metrics = {"classes": len(words), "prompts_per_class": n_sets, "eot_problems": n_eot_bad,
               "pool_index_problems": n_pool_bad,
               "classes_cut": n_missing, "misplaced": n_misplaced, "merged_with_punctuation": n_merged}
    owner = type(pl) if pl is not None else type(target.model)
    location = locate(owner.__init__, r"tokeniz\w*\(") or locate(owner) or text_location(target)
    if problems:
        return Outcome(Status.FAIL, f"{len(problems)} prompt problem(s): {problems[0]}", metrics, evidence, location)
    where = f"at the {position}" if position else "where the prompts put them (the layout states no position to hold)"
    count = f"{len(words)}" if n_sets == 1 else f"{n_sets * len(words)} ({n_sets} per class)"
    return Outcome(Status.PASS, f"all {count} prompts whole, class tokens {where}, one EOT each, "
                   f"pooled index = EOT", metrics, evidence, location)


def context_count(pl) -> int | None:
    """How many context slots a prompt has: ``n_ctx``, else the length of ``ctx``; None when neither says."""
    n = getattr(pl, "n_ctx", None)
    if isinstance(n, int):
        return n
    ctx = getattr(pl, "ctx", None)
    return int(ctx.shape[-2]) if isinstance(ctx, torch.Tensor) and ctx.dim() >= 2 else None
