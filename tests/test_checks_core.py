"""The registry, the runner's guards (crash -> ERROR, nothing examined -> not PASS), exit codes."""
import pytest
import torch

from checks import AuditTarget, Outcome, Skip, Status, audit, exit_code, faults, list_audits, run_audits
from checks.core import _REGISTRY, get_audit
from videocoop.utils.errors import VideoCoopError

PUBLIC_IDS = ["determinism", "learning-signal", "buffer-device-sync", "index-device-consistency", "eot-collapse", "dataset-unpacking",
              "text-encoder-parity", "causal-mask", "batch-independence", "gradient-flow", "prompt-tokenization",
              "host-sync", "checkpoint-roundtrip", "feature-model-match", "temporal-padding", "video-batch-independence",
              "class-order", "logit-scale", "optimizer-step", "extraction-parity", "split-integrity",
              "distributed-equivalence", "checkpoint-strictness", "forward-state",
              "class-list-response", "temporal-operation", "temperature"]


def test_public_ids_in_report_order():
    assert list_audits() == PUBLIC_IDS


def test_unknown_id_names_the_valid_ones(tiny_clip, classnames):
    with pytest.raises(VideoCoopError, match="valid audits: determinism, learning-signal, buffer-device-sync"):
        run_audits(faults.clean(*tiny_clip, classnames), ["eot-colapse"])


@pytest.fixture
def temporary_audits():
    before = dict(_REGISTRY)
    yield
    _REGISTRY.clear()
    _REGISTRY.update(before)


def test_runner_guards(temporary_audits, tiny_clip, classnames):
    @audit("t-crash", title="t", problem="p", fix="f", remediation="r")
    def crash(target):
        raise ZeroDivisionError("boom")

    @audit("t-empty", title="t", problem="p", fix="f", remediation="r")
    def empty(target):
        return Outcome(Status.PASS, "looked at nothing")

    @audit("t-skip", title="t", problem="p", fix="f", remediation="r")
    def skip(target):
        raise Skip("no dataset")

    @audit("t-perf", title="t", problem="p", fix="f", remediation="r", correctness=False)
    def perf(target):
        return Outcome(Status.FAIL, "slow", {"n": 1})

    target = faults.clean(*tiny_clip, classnames)
    crashed, empty_, skipped, perf_ = run_audits(target, ["t-crash", "t-empty", "t-skip", "t-perf"])
    assert crashed.status == Status.ERROR and "ZeroDivisionError: boom" in crashed.message
    assert "test_checks_core.py" in crashed.evidence[0]
    assert empty_.status == Status.ERROR and "examined nothing" in empty_.message
    assert skipped.status == Status.SKIP and skipped.message == "no dataset"
    assert perf_.status == Status.WARN  # a speed audit never fails a run
    assert exit_code([crashed]) == 1 and exit_code([skipped, perf_]) == 0
    assert get_audit("t-skip").title == "t"


def test_bare_model_is_wrapped(tiny_clip, classnames):
    target = AuditTarget.coerce(faults.clean(*tiny_clip, classnames).model)
    assert target.classnames == classnames
    with pytest.raises(VideoCoopError, match="bare model without class names"):
        AuditTarget.coerce(__import__("torch").nn.Linear(2, 2))


def test_results_are_json_ready(tiny_clip, classnames):
    (r,) = run_audits(faults.clean(*tiny_clip, classnames), ["buffer-device-sync"])
    d = r.to_dict()
    assert d["status"] == "pass" and {"id", "metrics", "evidence", "location"} <= set(d)


def test_device_says_where_the_device_audits_move_the_model(tiny_clip, classnames):
    from checks.core import resolve_device

    (r,) = run_audits(faults.clean(*tiny_clip, classnames), ["buffer-device-sync"], device="cpu")
    assert r.status == Status.PASS and r.metrics["device"] == "meta"  # a CPU-only run: meta stands in
    assert resolve_device(None).type == ("cuda" if torch.cuda.is_available() else "meta")
    with pytest.raises(VideoCoopError, match="choose one of cpu, cuda"):
        run_audits(faults.clean(*tiny_clip, classnames), ["buffer-device-sync"], device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(VideoCoopError, match="no CUDA device is present"):
            run_audits(faults.clean(*tiny_clip, classnames), ["buffer-device-sync"], device="cuda")


def test_wrapped_models_are_audited_through_their_wrapper(tiny_clip, classnames):
    """torch.compile's OptimizedModule and DataParallel hide the CoOp layout behind .module/_orig_mod
    (DistributedDataParallel: tests/test_distributed.py)."""
    import torch
    from torch.nn import DataParallel

    target = faults.with_data(*tiny_clip, classnames)
    model = target.model
    for wrapped in (torch.compile(model), DataParallel(model), torch.compile(DataParallel(model))):
        assert AuditTarget.coerce(wrapped).model is model
    target.model = torch.compile(model)
    results = run_audits(target, ["buffer-device-sync", "video-batch-independence", "optimizer-step", "class-order"])
    assert [r.status for r in results] == [Status.PASS] * 4, [(r.id, r.message) for r in results]


def test_the_package_docstring_names_every_use_of_videocoop():
    """checks uses videocoop through the surface its docstring lists: the list and the imports agree both ways."""
    import ast
    import re
    from pathlib import Path

    import checks

    listed = set()
    for line in checks.__doc__.splitlines():
        m = re.fullmatch(r"\s+(videocoop[\w.]*)\s{2,}([^:]+):.*", line)
        if m:
            listed |= {(m.group(1), name.strip()) for name in m.group(2).split(",")}
    imported = set()
    for path in Path(checks.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module.split(".")[0] == "videocoop":
                imported |= {(node.module, alias.name) for alias in node.names}
            elif isinstance(node, ast.Import):  # `from videocoop.x import name`, so the list can name it
                assert all(alias.name.split(".")[0] != "videocoop" for alias in node.names), path
    assert listed == imported, (sorted(imported - listed), sorted(listed - imported))
