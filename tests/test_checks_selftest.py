"""python -m checks --selftest: every audit on its clean case and its planted fault, here."""
import pytest
import torch

from checks import Status, faults, list_audits
from checks.cli import main
from checks.faults import zoo


def test_selftest_catches_every_planted_fault(capsys):
    assert main(["--selftest"]) == 0
    out = capsys.readouterr().out
    own = out.split("the foreign zoo", 1)[0]
    rows = {line.split()[0]: line for line in own.splitlines()
            if line.split() and line.split()[0] in list_audits() and "(runner:" not in line}
    assert set(rows) == set(list_audits())  # every audit, on its own line
    for audit_id, line in rows.items():
        assert line.split()[1] == "PASS" and line.endswith("caught"), line
    for audit_id, planted in [*faults.PLANTED.items(), *faults.ALSO_PLANTED]:  # every planted fault has its row
        assert any(line.split()[:1] == [audit_id] and planted.make.__name__ in line and line.endswith("caught")
                   for line in own.splitlines()), planted.make.__name__
    assert "(runner: model raises)" in out and "fp16_text_float_features" in out
    n, also = len(list_audits()), len(faults.ALSO_PLANTED)  # every audit's planted faults, and the runner's own
    assert f"OK: {n + also + 1} of {n + also + 1} planted faults caught, {n + also} of {n + also} clean cases passed" in out
    assert ("device audits on CUDA" if torch.cuda.is_available() else "device audits on the meta device") in out
    families, planted = len(zoo.FAMILIES), sum(len(f.faults) for f in zoo.FAMILIES)
    assert f"OK: the zoo: {families} families, 0 false FAIL, 0 ERROR, {planted} of {planted} planted faults caught" in out
    table = out.split("the foreign zoo", 1)[1]
    assert all(f.name in table for f in zoo.FAMILIES) and "MISSED" not in table and "FALSE ALARM" not in table


@pytest.fixture
def no_zoo(monkeypatch):
    """The self-test's own planted faults alone (the zoo has its own tests below)."""
    monkeypatch.setattr(zoo, "FAMILIES", ())


def test_a_false_alarm_in_the_zoo_exits_1(monkeypatch, capsys):
    family = zoo.FAMILIES[0]
    monkeypatch.setattr(zoo, "FAMILIES", (family._replace(clean=zoo.cocoop.cocoop_permute_kept, faults=()),))
    monkeypatch.setattr(faults, "PLANTED", {k: v for k, v in faults.PLANTED.items() if k == "host-sync"})
    monkeypatch.setattr("checks.selftest.list_audits", lambda: ["host-sync"])
    assert main(["--selftest"]) == 1
    out = capsys.readouterr().out
    assert "FALSE ALARM batch-independence: FAIL" in out and "FAILED: the zoo: 1 families" in out


def test_a_missed_fault_exits_1(no_zoo, monkeypatch, capsys):
    monkeypatch.setitem(faults.PLANTED, "host-sync", faults.Planted(faults.clean, Status.WARN, "Tensor.item()"))
    assert main(["--selftest"]) == 1
    out = capsys.readouterr().out
    total = len(list_audits()) + len(faults.ALSO_PLANTED) + 1
    assert "MISSED" in out and "missed: host-sync on clean: expected WARN" in out and f"FAILED: {total - 1} of {total}" in out


def test_a_false_alarm_on_the_clean_case_exits_1(no_zoo, monkeypatch, capsys):
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
