"""A run's protocol record: what a reader must know to compare its numbers with another's (CoOp #43: best
epoch or last?; ActionCLIP #11: how many views?; CoOp #27: which protocol's settings?).

Written into ``summary.json`` and ``eval.json`` (``protocol``), the zero-shot result, and under a sweep's
results table: how the model was selected, the frames and views evaluated, the prompt template, the class
list's hash, the split seed and the shots.
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence

from ..data.protocols import split_seed_of

#: How the reported model is chosen without a separate selection split: the last epoch (CoOp reports it). The
#: validation split is the split the numbers are reported on, so no epoch is chosen on it.
LAST_EPOCH = ("last epoch (checkpoint_last.pt; no epoch was chosen: only a split of its own, --select-feature-dir, "
              "chooses one, never the split the numbers are reported on)")


def selection_line(selection: dict | None) -> str:
    """How the reported model was chosen, in the words of the run's own selection record (``summary.json``'s
    ``selection``, :meth:`videocoop.train.selection.Selection.summary`): the numbers are the last epoch's; an epoch
    chosen on a selection split of its own is kept beside them."""
    if not selection:
        return LAST_EPOCH
    return (f"last epoch (checkpoint_last.pt: the reported numbers); epoch {selection['epoch']} chosen on "
            f"{selection['split']} (select top-1 {selection['select_top1']:.2f}%) is kept as "
            f"{selection.get('checkpoint', 'checkpoint_best.pt')}, loaded only with --checkpoint best")


#: Views per video in evaluation: one clip of the sampled frames, no multi-crop or multi-clip averaging.
VIEWS = 1


def class_list_hash(classnames: Sequence[str]) -> str:
    """sha256 of the class list in label order, one name a line: equal hashes, equal labels."""
    return hashlib.sha256("\n".join(classnames).encode("utf-8")).hexdigest()[:16]


def frames_record(num_frames: int | None) -> dict:
    """The frames and views a video is evaluated with."""
    sampled = (f"{num_frames} frames, one per segment: random offsets in training (by seed and epoch), the "
               f"segment middles in evaluation" if num_frames else "every stored frame (padded and masked)")
    return {"frames": num_frames, "frame_sampling": sampled, "views": VIEWS}


def prompt_record(model) -> dict:
    """The learned prompt's template (its context slots written X) and how the context starts."""
    pl = model.prompt_learner
    template = pl.prompt_texts[0]
    if pl.class_words and pl.class_words[0] in template:
        template = template.replace(pl.class_words[0], "{class}", 1)
    return {"template": template, "n_ctx": pl.n_ctx, "csc": pl.csc, "class_token_position": pl.class_token_position}


def run_protocol(cfg, model, classnames: Sequence[str], selection: str = LAST_EPOCH,
                 novel: Sequence[str] = ()) -> dict:
    """The protocol of a trained (or evaluated) run: ``model_selection``, frames and views, the prompt, the
    classes and their hash (and the novel classes' under base-to-novel), the split seed and the shots."""
    record = {"model_selection": selection, **frames_record(cfg.num_frames), "prompt": prompt_record(model),
              "initial_prompts_file": cfg.initial_prompts_file, "classes": len(classnames),
              "classes_sha256": class_list_hash(classnames), "shots": cfg.shots,
              "split_seed": split_seed_of(cfg) if cfg.shots else None, "seed": cfg.seed,
              "base_classes": cfg.base_classes}
    if novel:
        record.update(novel_classes=len(novel), novel_classes_sha256=class_list_hash(novel))
    return record


def describe_protocol(record: dict) -> list[str]:
    """The record as lines for a results table's footer."""
    lines = [f"model selection: {record.get('model_selection', 'not recorded')}"]
    views = record.get("views", VIEWS)
    lines.append(f"frames: {record.get('frame_sampling', 'not recorded')}; {views} view{'s' if views != 1 else ''} "
                 f"per video")
    prompt = record.get("prompt")
    if prompt:
        lines.append(f"prompt: '{prompt['template']}' ({prompt['n_ctx']} learned context vectors"
                     f"{', class-specific' if prompt['csc'] else ''}, class at the {prompt['class_token_position']}"
                     + (f"; initialised from {record['initial_prompts_file']}" if record.get("initial_prompts_file")
                        else "; random initial context") + ")")
    if record.get("templates"):
        lines.append(f"zero-shot templates: {record['templates']}")
    lines.append(f"classes: {record.get('classes')}, sha256 {record.get('classes_sha256')}"
                 + (f"; novel: {record['novel_classes']}, sha256 {record['novel_classes_sha256']}"
                    if record.get("novel_classes") else ""))
    return lines


__all__ = ["LAST_EPOCH", "VIEWS", "class_list_hash", "describe_protocol", "frames_record", "prompt_record",
           "run_protocol", "selection_line"]
