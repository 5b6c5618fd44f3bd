"""Half precision: a correct model passes, judged against its precision's measured noise floor;
every planted text-path fault still fails in bf16 and fp16."""
import warnings

import pytest
import torch

from checks import Status, faults, run_audits
from checks.tolerances import FP32_TOL, NOISE_FACTOR
from videocoop.clip import PRECISIONS, TINY_MODEL, load_clip

HALF = ["bf16", "fp16"]


@pytest.fixture(scope="module")
def clips():
    """The tiny CLIP in each precision (random weights, seed 0), built once."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {p: load_clip(TINY_MODEL, precision=p, seed=0) for p in PRECISIONS}


@pytest.mark.parametrize("kwargs", [{}, {"class_token_position": "front", "csc": True}, {"text_pool": "mean"}],
                         ids=["shared-prefix", "plain", "mean"])
@pytest.mark.parametrize("precision", PRECISIONS)
def test_default_audits_pass_in_every_precision(precision, kwargs, clips):
    torch.manual_seed(0)  # the random context
    target = faults.with_data(*clips[precision], faults.NAMES)
    target.model = faults.clean(*clips[precision], faults.NAMES, **kwargs).model
    results = run_audits(target)
    assert not {r.id: (r.status, r.message) for r in results if r.status.failed}
    parity = {r.id: r for r in results}["text-encoder-parity"]
    if precision in HALF:  # judged against the floor measured in this run, said in the evidence
        floor = parity.metrics["noise_floor"]
        assert 0 < floor < 0.05 and parity.metrics["tolerance"] == pytest.approx(NOISE_FACTOR * floor)
        assert any("noise floor" in e and "fp32 copy" in e for e in parity.evidence)
    else:  # amp keeps fp32 weights: the fp32 tolerance
        assert parity.metrics["tolerance"] == FP32_TOL and parity.metrics["noise_floor"] is None


# Every planted fault of the audits that compare within a tolerance, and the words of its finding.
TEXT_PATH_FAULTS = [
    ("text-encoder-parity", faults.permute_no_mask, "differs from encode_text"),
    ("text-encoder-parity", faults.last_position, "differs from encode_text"),
    ("text-encoder-parity", faults.sos_pooling, "differs from encode_text"),
    ("text-encoder-parity", faults.shared_path_prefix_only, "own forward computes other text features"),
    ("causal-mask", faults.no_causal_mask, "changed the pooled feature"),
    ("causal-mask", faults.last_position, "changed the pooled feature"),
    ("causal-mask", faults.permute_no_mask, "changed the pooled feature"),
    ("batch-independence", faults.permute_no_mask, "classes mix inside attention"),
    ("batch-independence", faults.shared_path_prefix_only, "encodes differently alone"),
]


@pytest.mark.parametrize("audit_id,make,words", TEXT_PATH_FAULTS, ids=[f"{a}-{m.__name__}" for a, m, _ in TEXT_PATH_FAULTS])
@pytest.mark.parametrize("precision", HALF)
def test_planted_faults_fail_in_half_precision(precision, audit_id, make, words, clips, classnames):
    torch.manual_seed(0)
    (r,) = run_audits(make(*clips[precision], classnames), [audit_id])
    assert r.status == Status.FAIL, (r.message, r.evidence)
    assert words in r.message
    # well beyond the tolerance, not at its edge
    measured = r.metrics.get("max_rel_diff", r.metrics.get("max_rel_change"))
    measured = max(measured, r.metrics.get("forward_path_max_rel_diff", 0))
    assert measured > 2 * r.metrics["tolerance"]


def test_half_precision_without_clip_measures_the_floor_on_the_encoder(clips, classnames):
    """No CLIP model to measure on: the encoder's own fp32 copy gives the floor (a fixed 1e-2
    would sit inside bf16's rounding)."""
    for make, status in ((faults.clean, Status.PASS), (faults.permute_no_mask, Status.FAIL)):
        torch.manual_seed(0)
        target = make(*clips["bf16"], classnames)
        target.clip_model = None
        (r,) = run_audits(target, ["batch-independence"])
        assert r.status == status, (r.message, r.evidence)
        assert any("the model's text encoder in bfloat16 against an fp32 copy of it (no CLIP model given" in e
                   for e in r.evidence)


def test_without_anything_to_measure_on_machine_epsilon_stands_in(clips, classnames):
    import threading

    for make, status in ((faults.clean, Status.PASS), (faults.permute_no_mask, Status.FAIL)):
        torch.manual_seed(0)
        target = make(*clips["bf16"], classnames)
        target.clip_model = None
        target.model.text_encoder.lock = threading.Lock()  # cannot be deep-copied
        (r,) = run_audits(target, ["batch-independence"])
        assert r.status == status, (r.message, r.evidence)
        assert r.metrics["noise_floor"] == 4 * torch.finfo(torch.bfloat16).eps
        assert any("machine epsilon" in e and "stands in" in e for e in r.evidence)
