"""The pytest plugin (checks.pytest_plugin): pytest run inside pytest with pytester.

Each run is in-process (pytester's inline run) in an empty folder, with the repository
root on sys.path so that ``tests.targets`` imports; the audits run on the tiny CLIP.
"""
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import torch

from checks import Status, core, faults, list_audits, run_audits, runner
from checks.pytest_plugin import DEVICES, assert_audits_pass

pytest_plugins = ["pytester"]
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def run(pytester, monkeypatch):
    """``run(*args)``: pytest in pytester's folder; ``run.audited`` lists every audit run, in order."""
    pytester.syspathinsert(ROOT)
    audited = []
    original = runner.run_audit

    def counting(spec, target):
        audited.append(spec.id)
        return original(spec, target)

    monkeypatch.setattr(runner, "run_audit", counting)

    def go(*args):
        return pytester.runpytest("-p", "no:cacheprovider", *args)

    go.audited = audited
    return go


def test_clean_target_passes_one_item_per_audit_run_once(run, pytester):
    report = pytester.path / "reports" / "audits.md"
    result = run("--audit-target", "tests.targets:coop_clean", "-v", "--audit-report", str(report))
    ids = list_audits()
    sourced = [i for i in ids if i in faults.CLEAN]  # they need source videos, which the in-memory data lacks
    result.assert_outcomes(passed=len(ids) - len(sourced), skipped=len(sourced))
    result.stdout.fnmatch_lines([f"audits: tests.targets:coop_clean, {len(ids)} audit(s)*", f"*collected {len(ids)} items"]
                                + [f"tests.targets:coop_clean::{i} {'SKIPPED' if i in sourced else 'PASSED'}*" for i in ids]
                                + [f"*audit report: {report}*"])
    assert run.audited == ids  # each audit once in the session, not once per item
    text = report.read_text()
    assert "Safe to train" in text and "`pytest -p no:cacheprovider --audit-target tests.targets:coop_clean" in text
    assert all(f"(`{i}`)" in text for i in ids)
    assert (report.parent / "audits_eot_collapse.png").is_file()


# Planted faults that break exactly one audit of the whole suite.
@pytest.mark.parametrize("name,audit_id", [("clip_trainable", "gradient-flow"),
                                           ("checkpoint_misses_buffers", "checkpoint-roundtrip")])
def test_planted_fault_fails_exactly_its_audit_with_the_evidence(name, audit_id, run):
    from checks.cli import load_target
    from tests import targets

    assert targets.PLANTED[name] == audit_id
    result = run("--audit-target", f"tests.targets:{name}")
    result.assert_outcomes(passed=len(list_audits()) - 1 - len(faults.CLEAN), failed=1, skipped=len(faults.CLEAN))
    result.stdout.fnmatch_lines([f"FAILED tests.targets:{name}::{audit_id} - *"])
    (expected,) = run_audits(load_target(f"tests.targets:{name}"), [audit_id])  # the same audit, run here
    assert expected.status == Status.FAIL and expected.evidence
    out = result.stdout.str()
    section = out.split(f"_ {audit_id} _", 1)[1].split("short test summary", 1)[0]
    assert f"{audit_id} FAIL: {expected.message}" in section
    assert "evidence:" in section and all(line in section for line in expected.evidence)


def test_warn_passes_with_a_warning_and_skip_skips_with_the_reason(run):
    result = run("--audit-target", "tests.targets:item_loop", "--audit-only", "host-sync")
    result.assert_outcomes(passed=1, warnings=1)
    result.stdout.fnmatch_lines(["*AuditWarning: host-sync: * host-device sync*Tensor.item()*"])
    # a bare model: no dataset, so dataset-unpacking cannot apply
    result = run("--audit-target", "checks.faults:bare_model", "--audit-only", "dataset-unpacking", "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["SKIPPED * dataset-unpacking: *dataset*"])


def test_an_audit_that_crashes_fails_its_item(run, pytester):
    # a tokenizer that is not one: the audit itself crashes (ERROR), no finding about the model
    pytester.makepyfile(crashing="from tests.targets import faults, planted\n\n"
                                 "def broken_tokenizer():\n    target = planted(faults.clean)\n"
                                 "    target.tokenizer = lambda texts: 1 / 0\n    return target\n")
    result = run("--audit-target", "crashing:broken_tokenizer", "--audit-only", "prompt-tokenization")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["prompt-tokenization ERROR: the audit crashed: ZeroDivisionError*",
                                 "  evidence:", "    raised at *"])


def test_a_model_that_raises_on_its_data_fails_its_item_as_a_finding(run, pytester):
    pytester.makepyfile(crashing="from tests.targets import faults, planted\n\n"
                                 "def full_context():\n    return planted(faults.full_context_positions)\n")
    result = run("--audit-target", "crashing:full_context", "--audit-only", "causal-mask")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["causal-mask FAIL: the model raised RuntimeError*", "  evidence:", "    raised at *"])


def test_k_and_deselect_choose_which_audits_run(run, pytester):
    report = pytester.path / "k.md"
    result = run("--audit-target", "tests.targets:coop_clean", "-k", "eot-collapse", "--audit-report", str(report))
    result.assert_outcomes(passed=1, deselected=len(list_audits()) - 1)
    assert run.audited == ["eot-collapse"]  # the deselected audits never ran
    assert "(`eot-collapse`)" in report.read_text() and "(`causal-mask`)" not in report.read_text()
    run.audited.clear()
    result = run("--audit-target", "tests.targets:coop_clean", "--audit-only", "causal-mask,batch-independence",
                 "--deselect", "tests.targets:coop_clean::causal-mask")
    result.assert_outcomes(passed=1, deselected=1)
    assert run.audited == ["batch-independence"]


def test_the_audit_fixture_and_assert_audits_pass(run, pytester):
    pytester.makepyfile(test_mine='''
        from checks.pytest_plugin import assert_audits_pass

        def test_clean(audit):
            results = audit("tests.targets:coop_clean", ids="causal-mask,buffer-device-sync")
            assert [r.id for r in results] == ["causal-mask", "buffer-device-sync"]
            assert results[1].metrics["device"] == "meta"  # --audit-device cpu is the fixture's default
            assert_audits_pass(results)

        def test_fault(audit):
            assert_audits_pass(audit("tests.targets:clip_trainable", ids=["causal-mask", "gradient-flow"]))

        def test_nothing_ran():
            assert_audits_pass([])
    ''')
    result = run("-v", "--audit-device", "cpu")
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines(["*1 of 2 audit(s) failed:", "*gradient-flow FAIL: * CLIP tensor(s) are trainable*",
                                 "*  evidence:"])
    result.stdout.fnmatch_lines(["*no audit ran: an empty list of results proves nothing*"])


def test_silent_unless_asked(run, pytester):
    pytester.makepyfile(test_plain="def test_ok():\n    assert True\n")
    result = run()
    result.assert_outcomes(passed=1)
    assert "audits:" not in result.stdout.str() and not run.audited


@pytest.mark.parametrize("args,words", [
    (["--audit-only", "eot-collapse", "--audit-report", "r.md"], "--audit-only and --audit-report need --audit-target"),
    (["--audit-target", "tests.targets"], "must look like pkg.module:factory"),
    (["--audit-target", "tests.targets:coop_clean", "--audit-only", "eot-colapse"], "valid audits: determinism, learning-signal, buffer-device-sync"),
    (["--audit-target", "tests.targets:coop_clean", "--audit-device", "tpu"], "invalid choice: 'tpu'"),
    pytest.param(["--audit-target", "tests.targets:coop_clean", "--audit-device", "cuda"],
                 "no CUDA device is present", marks=pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA here")),
    pytest.param(["--audit-device", "cuda"], "no CUDA device is present",  # the fixture's default, alone
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA here")),
])
def test_usage_errors(args, words, run):
    result = run(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert words in result.stderr.str() and "Traceback" not in result.stderr.str()
    assert not run.audited


def test_a_target_that_cannot_be_built_fails_every_item_in_one_line(run):
    result = run("--audit-target", "checks.faults:broken_factory", "--audit-only", "causal-mask,host-sync")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(["*broken_factory() raised RuntimeError: checkpoint file not found: ckpt.pt*"])
    assert not run.audited


def test_registered_and_light():
    """Found through the pytest11 entry point; importing it (every pytest session does) loads no torch."""
    assert "checks.pytest_plugin" in [e.value for e in entry_points(group="pytest11")]
    assert DEVICES == core.AUDIT_DEVICES
    code = "import sys, checks.pytest_plugin; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


def test_assert_audits_pass_lists_each_failure_with_its_evidence():
    from tests import targets

    results = run_audits(targets.clip_trainable(), ["gradient-flow", "causal-mask"])
    with pytest.raises(pytest.fail.Exception) as e:
        assert_audits_pass(results)
    (failed,) = [r for r in results if r.status == Status.FAIL]
    message = str(e.value)
    assert message.startswith("1 of 2 audit(s) failed:\ngradient-flow FAIL: ")
    assert all(f"    {line}" in message for line in failed.evidence) and failed.remediation in message
    assert_audits_pass([r for r in results if r.id == "causal-mask"])  # a PASS passes
