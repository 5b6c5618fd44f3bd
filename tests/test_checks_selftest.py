"""python -m checks --selftest: every audit on its clean case and its planted fault, here."""
import pytest
import torch

from checks import Status, faults, list_audits
from checks.cli import main


def test_selftest_catches_every_planted_fault(capsys):
    assert main(["--selftest"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines()
            if line.split() and line.split()[0] in list_audits() and "(runner:" not in line}
    assert set(rows) == set(list_audits())  # all seventeen, each on its own line
    for audit_id, line in rows.items():
        assert line.split()[1] == "PASS" and line.endswith("caught"), line
        assert faults.PLANTED[audit_id].make.__name__ in line
    assert "(runner: model raises)" in out and "fp16_text_float_features" in out
    n = len(list_audits())  # every audit's planted fault, and the runner's own
    assert f"OK: {n + 1} of {n + 1} planted faults caught, {n} of {n} clean cases passed" in out
    assert ("device audits on CUDA" if torch.cuda.is_available() else "device audits on the meta device") in out


def test_a_missed_fault_exits_1(monkeypatch, capsys):
    monkeypatch.setitem(faults.PLANTED, "host-sync", faults.Planted(faults.clean, Status.WARN, "Tensor.item()"))
    assert main(["--selftest"]) == 1
    out = capsys.readouterr().out
    assert "MISSED" in out and "missed: host-sync on clean: expected WARN" in out and f"FAILED: {len(list_audits())} of {len(list_audits()) + 1}" in out


def test_a_false_alarm_on_the_clean_case_exits_1(monkeypatch, capsys):
    monkeypatch.setattr(faults, "with_data", lambda clip, tok, names, **kw: faults.plain_tokenized_prompts(clip, tok, names))
    assert main(["--selftest"]) == 1
    out = capsys.readouterr().out
    assert "FALSE ALARM on the clean case" in out and "false alarm: buffer-device-sync on the clean model: FAIL" in out


@pytest.mark.parametrize("argv,words", [
    (["--selftest", "--n-ctx", "4"], "these flags do not apply: --n-ctx 4"),
    (["--selftest", "--only", "host-sync"], "these flags do not apply: --only"),
    (["--selftest", "--device", "cpu"], "--selftest --device cpu"),
])
def test_selftest_usage_errors(argv, words, capsys):
    assert main(argv) == 2
    assert words in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is here")
def test_selftest_on_cuda_without_cuda_is_refused(capsys):
    assert main(["--selftest", "--device", "cuda"]) == 2
    assert "no CUDA device" in capsys.readouterr().err


def test_make_test_gpu_runs_the_selftest_on_cuda():
    from pathlib import Path

    makefile = (Path(__file__).resolve().parent.parent / "Makefile").read_text()
    recipe = makefile.split("\ntest-gpu:", 1)[1].split("\n\n", 1)[0]
    assert '-m pytest -q -m "gpu or audit"' in recipe and "-m checks --selftest --device cuda" in recipe
