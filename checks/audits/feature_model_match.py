"""feature-model-match: the features were extracted with the CLIP about to be trained."""
from __future__ import annotations

from ..core import AuditTarget, Outcome, Skip, Status, audit
from ..inputs import feature_dim
from ..locations import locate


@audit(
    "feature-model-match",
    title="Features come from the same CLIP as the model",
    problem="frame features extracted with one CLIP (tower or weights) and prompts trained on another: "
            "the two embedding spaces do not match, training runs and learns nothing useful",
    fix="each feature folder's features.json names the model's CLIP tower and weights, and its dim is "
        "the model's embedding dim",
    remediation="train with the --clip-model/--pretrained/--clip-checkpoint the features were extracted "
                "with (features.json says which), or re-extract the features",
)
def feature_model_match(target: AuditTarget) -> Outcome:
    """Compare every dataset's features.json with the model's CLIP name, weights and dim."""
    sets = [(split, ds, getattr(ds, "info", None)) for split, ds in target.datasets()]
    sets = [s for s in sets if s[2] is not None]
    if not sets:
        raise Skip("no dataset with a features.json (dataset.info) to compare")
    dim = feature_dim(target)
    want = {"clip_model": target.clip_name, "weights": target.weights, "dim": dim}
    problems, evidence = [], [f"model: clip_model={target.clip_name}, weights={target.weights}, dim={dim}"]
    for split, ds, info in sets:
        evidence.append(f"{split} features.json: " + ", ".join(f"{k}={info.get(k)}" for k in want))
        for key, value in want.items():
            if value is None:
                evidence.append(f"{split}: the target does not say its {key}; not compared")
            elif info.get(key) != value:
                problems.append(f"{split} features.json says {key}={info.get(key)!r}, the model has {value!r}")
        ds_dim = getattr(ds, "dim", None)
        if ds_dim is not None and ds_dim != dim:
            problems.append(f"{split} features have dim {ds_dim}, the model expects {dim}")
    metrics = {"datasets": len(sets), "mismatches": len(problems)}
    location = locate(type(sets[0][1]))
    if problems:
        return Outcome(Status.FAIL, "; ".join(problems), metrics, evidence + problems, location)
    return Outcome(Status.PASS, f"{len(sets)} feature folder(s) match the model's CLIP "
                   f"({target.clip_name}, {target.weights}, dim {dim})", metrics, evidence, location)
