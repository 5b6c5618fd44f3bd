"""prompt-tokenization: each prompt holds its whole class name, its EOT, and pools there."""
from __future__ import annotations

import torch

from videocoop.clip import text_tower

from ..core import AuditTarget, Outcome, Status, audit
from ..probe import (class_word_list, eot_token_id, locate, need_clip, prompt_learner, prompts_and_tokens,
                     text_encoder)


def find(row: list[int], sub: list[int]) -> int:
    """Start of the first occurrence of ``sub`` in ``row``, or -1."""
    for s in range(len(row) - len(sub) + 1):
        if row[s:s + len(sub)] == sub:
            return s
    return -1


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
)
def prompt_tokenization(target: AuditTarget) -> Outcome:
    """Re-tokenise each class's words: whole in ``tokenized_prompts``, placed as said in the prompt embeddings."""
    token_embedding = text_tower(need_clip(target, tokenizer=True)).token_embedding
    pl = prompt_learner(target)
    te = text_encoder(target)
    tokens = pl.tokenized_prompts.cpu()
    eot_id = eot_token_id(target)
    position = getattr(pl, "class_token_position", "end")
    words = class_word_list(target)
    prompts = prompts_and_tokens(target)[0]  # [n_cls, L, width]
    problems, evidence = [], []
    n_eot_bad = n_pool_bad = n_missing = n_misplaced = 0
    pools_by_id = getattr(te, "eot_token_id", None) is not None
    for c, (name, w) in enumerate(zip(target.classnames, words)):
        row = tokens[c].tolist()
        eots = [i for i, t in enumerate(row) if t == eot_id] if eot_id is not None else [int(tokens[c].argmax())]
        if len(eots) != 1:
            n_eot_bad += 1
            problems.append(f"{name!r}: {len(eots)} EOT tokens")
            continue
        eot = eots[0]
        if int(tokens[c].argmax()) != eot and not pools_by_id:
            n_pool_bad += 1
            problems.append(f"{name!r}: argmax of the ids is position {int(tokens[c].argmax())}, the EOT is at {eot}")
        ids = target.tokenizer([w])[0]
        sub = ids[1: int((ids > 0).sum()) - 1].tolist()  # the words' ids between SOS and EOT
        start = find(row[:eot], sub)
        if start < 0:
            n_missing += 1
            kept = sum(1 for t in sub if t in row[:eot])
            problems.append(f"{name!r}: its {len(sub)} tokens are not all in the prompt ({kept} found before the "
                            f"EOT at {eot}): cut at the context length?")
            continue
        with torch.no_grad():
            at = find_rows(prompts[c], token_embedding(torch.tensor(sub)).to(prompts.device))
        start = at if at >= 0 else start  # embeddings not found (rewritten class tokens?): the ids say
        end = start + len(sub)
        where = "front" if start == 1 else ("end" if eot - end <= 1 else "middle")
        if where != position:
            n_misplaced += 1
            problems.append(f"{name!r}: class tokens at {start}..{end - 1} read as {where!r}, the layout says {position!r}")
        if c < 3:
            evidence.append(f"{name!r}: {len(sub)} class tokens at {start}..{end - 1} ({where}, read from the "
                            f"{'prompt embeddings' if at >= 0 else 'ids'}), EOT at {eot}")
    evidence.append(f"EOT id {eot_id}; pooling by {'id' if pools_by_id else 'argmax of the ids'}; "
                    f"prompt length {tokens.shape[1]}; class position {position!r}")
    evidence += problems
    metrics = {"classes": len(words), "eot_problems": n_eot_bad, "pool_index_problems": n_pool_bad,
               "classes_cut": n_missing, "misplaced": n_misplaced}
    location = locate(type(pl).__init__, r"tokeniz\w*\(") or locate(type(pl))
    if problems:
        return Outcome(Status.FAIL, f"{len(problems)} prompt problem(s): {problems[0]}", metrics, evidence, location)
    return Outcome(Status.PASS, f"all {len(words)} prompts whole, class tokens at the {position}, one EOT each, "
                   f"pooled index = EOT", metrics, evidence, location)
