"""CI, ready to copy: examples/ci parse and run only commands that exist; make gpu-check is ready.

A command exists when its Makefile target does, and every flag it passes (directly or
through ``ARGS="..."``) is one the tool accepts: ``python -m checks``, ``python -m bench``
and pytest, the checks plugin's options included.
"""
import re
import shlex
from pathlib import Path

import pytest
import torch
import yaml

from bench import gpu_check
from videocoop.cli import UsageError

ROOT = Path(__file__).resolve().parent.parent
CI = ROOT / "examples" / "ci"
#: What each Makefile target runs, as a tool whose flags ARGS must belong to.
TOOL_OF_TARGET = {"verify": "checks", "test": "pytest", "test-gpu": "pytest", "bench": "bench",
                  "gpu-check": "gpu_check"}


def makefile_targets() -> dict[str, str]:
    """target -> its recipe."""
    text = (ROOT / "Makefile").read_text()
    return {m.group(1): m.group(2) for m in re.finditer(r"^([\w-]+):[^=\n]*\n((?:\t.*\n?)*)", text, re.M)}


def check_flags(tool: str, args: list[str], config: pytest.Config) -> None:
    if tool == "pytest":
        for a in args:
            if a.startswith("-"):
                config.getoption(a.split("=", 1)[0])  # ValueError: no such option (the plugin's included)
        return
    if tool == "checks":
        from checks.cli import build_parser

        build_parser().parse_args(args)  # an unknown flag raises (a usage error, not an exit)
        return
    parse = {"bench": "bench.__main__", "gpu_check": "bench.gpu_check"}[tool]
    try:
        __import__(parse, fromlist=["parse_args"]).parse_args(args)
    except SystemExit as e:
        raise AssertionError(f"{tool} refuses {args}") from e


def check_command(command: str, config: pytest.Config) -> None:
    """Every command a CI file or gpu-check runs: a make target, a tool of ours, or nvidia-smi."""
    argv = shlex.split(command)
    tool, args = argv[0], argv[1:]
    if tool == "nvidia-smi":  # the driver's tool, present on every GPU runner
        return
    if tool == "make":
        targets = makefile_targets()
        names = [a for a in args if not a.startswith("-") and "=" not in a]
        assert len(names) == 1 and names[0] in targets, (command, sorted(targets))
        for a in args:
            if "=" in a:
                assert a.startswith("ARGS="), a  # the one variable the Makefile passes through
                check_flags(TOOL_OF_TARGET[names[0]], shlex.split(a.split("=", 1)[1]), config)
        return
    assert Path(tool).name.startswith("python") and args[0] == "-m", command
    module, rest = args[1], args[2:]
    check_flags({"checks": "checks", "bench": "bench", "pytest": "pytest"}[module], rest, config)


def test_make_targets_run_the_tools_their_args_go_to():
    targets = makefile_targets()
    for target, tool in TOOL_OF_TARGET.items():
        assert f"-m {'bench.gpu_check' if tool == 'gpu_check' else tool}" in targets[target], target
        assert "$(ARGS)" in targets[target], target


def test_make_test_and_test_gpu_audit_our_model():
    targets = makefile_targets()
    assert "$(AUDITS) --audit-device cpu" in targets["test"]
    assert "$(AUDITS) --audit-device cuda" in targets["test-gpu"] and '-m "gpu or audit"' in targets["test-gpu"]
    assert "AUDITS := --audit-target tests.targets:coop_clean" in (ROOT / "Makefile").read_text()


def words(command: str) -> list[str]:
    """The command's words, with the flags inside ``ARGS="..."`` as words of their own."""
    out = []
    for w in shlex.split(command):
        out += shlex.split(w[len("ARGS="):]) if w.startswith("ARGS=") else [w]
    return out


def _reports(commands: list[str]) -> set[str]:
    """The files the commands write: the values of their report flags."""
    out = set()
    for command in commands:
        w = words(command)
        out |= {v.split("=", 1)[1] for v in w if v.startswith("--junitxml=")}
        out |= {w[i + 1] for i, v in enumerate(w[:-1]) if v in ("--report", "--junit", "--audit-report")}
    return out


def test_github_workflow(request):
    wf = yaml.safe_load((CI / "github-actions.yml").read_text())
    jobs = wf["jobs"]
    assert set(jobs) == {"cpu", "cuda"}
    assert "self-hosted" in jobs["cuda"]["runs-on"] and "gpu" in jobs["cuda"]["runs-on"]
    for name, job in jobs.items():
        runs = [s["run"] for s in job["steps"] if "run" in s]
        for command in runs:
            check_command(command, request.config)
        uploads = [s for s in job["steps"] if s.get("uses", "").startswith("actions/upload-artifact@")]
        assert len(uploads) == 1 and uploads[0]["if"] == "${{ !cancelled() }}", name  # kept when a step fails
        written = _reports(runs)
        assert written and all(p.startswith(uploads[0]["with"]["path"]) for p in written), (name, written)
    cpu = [s["run"] for s in jobs["cpu"]["steps"] if "run" in s]
    assert [shlex.split(c)[:2] for c in cpu] == [["make", "verify"], ["make", "test"]]  # the README's two commands
    assert "--spawn" in words(cpu[0]) and "--audit-spawn" in words(cpu[1])  # CI opts in to the audit of processes
    assert any(p.endswith(".xml") for p in _reports(cpu)) and any(p.endswith(".md") for p in _reports(cpu))
    cuda = [shlex.split(s["run"])[:2] for s in jobs["cuda"]["steps"] if "run" in s]
    assert ["make", "test-gpu"] in cuda


def test_gitlab_ci(request):
    ci = yaml.safe_load((CI / "gitlab-ci.yml").read_text())
    jobs = {k: v for k, v in ci.items() if isinstance(v, dict) and "script" in v}
    assert set(jobs) == {"cpu", "cuda"} and jobs["cuda"]["tags"] == ["gpu"]
    for name, job in jobs.items():
        for command in job["script"]:
            check_command(command, request.config)
        written = _reports(job["script"])
        assert job["artifacts"]["when"] == "always" and job["artifacts"]["paths"] == ["reports/"]
        assert all(p.startswith("reports/") for p in written), written
        assert set(job["artifacts"]["reports"]["junit"]) == {p for p in written if p.endswith(".xml")}, name
    assert [shlex.split(c)[:2] for c in jobs["cpu"]["script"]] == [["make", "verify"], ["make", "test"]]
    assert "--spawn" in words(jobs["cpu"]["script"][0]) and "--audit-spawn" in words(jobs["cpu"]["script"][1])
    assert ["make", "test-gpu"] in [shlex.split(c)[:2] for c in jobs["cuda"]["script"]]


@pytest.mark.parametrize("command,error", [
    ("make tests", AssertionError),
    ('make test ARGS="--audit-targets x:y"', ValueError),
    ('make verify ARGS="--jnuit r.xml"', UsageError),
    ("python -m checks --no-such-flag", UsageError),
    ("make bench ARGS=--matrx", AssertionError),
    ("curl https://example.com/install.sh", AssertionError),
])
def test_a_command_that_does_not_exist_is_caught(command, error, request):
    with pytest.raises(error):
        check_command(command, request.config)


def test_gpu_check_runs_only_commands_that_exist(request):
    plan = gpu_check.steps(Path("reports/gpu-check"))
    assert [s.name for s in plan] == ["make test-gpu", "python -m checks", "python -m checks --selftest",
                                      "python -m bench --matrix"]
    for step in plan:
        check_command(shlex.join(step.argv), request.config)
    assert "gpu-check" in makefile_targets()


def test_gpu_check_budget_is_the_documented_one():
    """24 cases x (baseline 2 + 3, each of 3 paths 2 + 5) = 624 steps, as the docstring and docs/ci.md say."""
    from bench.__main__ import parse_args
    from bench.step import VARIANTS, matrix

    bench = parse_args(gpu_check.BENCH_ARGS + ["--matrix"])
    steps = len(matrix("cuda")) * ((bench.warmup + bench.baseline_repeats) + len(VARIANTS) * (bench.warmup + bench.repeats))
    assert steps == 624 and "= 624 steps" in gpu_check.__doc__
    assert "624" in (ROOT / "docs" / "ci.md").read_text()
    assert gpu_check.BUDGET_S <= 600 and bench.loader_videos == 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA here: gpu-check would run")
def test_gpu_check_says_no_cuda_device_is_present(capsys, tmp_path):
    out = tmp_path / "results-gpu.json"
    code = gpu_check.main(["--out", str(out), "--logs", str(tmp_path / "logs")])
    err = capsys.readouterr().err
    assert code == gpu_check.Exit.NO_CUDA != 0
    assert err.startswith("gpu-check: no CUDA device is present, so nothing ran.") and "Traceback" not in err
    assert "torch.cuda.is_available() is False" in err
    assert not out.exists() and not (tmp_path / "logs").exists()  # nothing ran, nothing written


def _gone(pid: int, wait_s: float = 30.0) -> bool:
    """Whether process ``pid`` has ended (absent, or a zombie left to whoever reaps it); a
    SIGKILLed process ends at once, the wait only covers the kernel's bookkeeping."""
    import time

    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


def test_gpu_check_runs_every_step_to_its_log_and_writes_one_results_file(monkeypatch, tmp_path, capsys):
    """The run itself, with stand-in steps (this machine has no GPU): a step that passes, one that
    fails, one past its cap (killed with its process group); the results file holds them all."""
    import json
    import sys

    py = sys.executable
    fake = [gpu_check.Step("passes", [py, "-c", "print('fine')"], 60, "passes.log"),
            gpu_check.Step("fails", [py, "-c", "import sys; print('boom'); sys.exit(2)"], 60, "fails.log"),
            # a shell, not Python: it prints within milliseconds, where Python's start-up alone
            # can take longer than the 2 s cap on a busy machine (and the log would be empty)
            # (the shell's child says its pid: killed with the group, it must be gone too)
            gpu_check.Step("hangs", ["sh", "-c", 'sleep 60 & echo "waiting $!"; wait'], 2, "hangs.log")]
    monkeypatch.setattr(gpu_check, "steps", lambda logs: fake)
    monkeypatch.setattr(gpu_check, "no_cuda_message", lambda: None)
    monkeypatch.setattr(gpu_check, "machine", lambda: {"card": "Stand-in GPU", "memory_gib": 80.0, "driver": "1.0",
                                                       "cuda": "13.0", "torch": torch.__version__})
    out, logs = tmp_path / "results-gpu.json", tmp_path / "logs"
    code = gpu_check.main(["--out", str(out), "--logs", str(logs), "--budget", "100"])
    printed = capsys.readouterr().out
    assert code == gpu_check.Exit.FAILED
    results = json.loads(out.read_text())
    assert results["machine"]["card"] == "Stand-in GPU" and results["bench"] is None and results["tests"] is None
    status = {r["name"]: r["status"] for r in results["steps"]}
    assert status == {"passes": "ok", "fails": "failed (exit 2)", "hangs": "timed out after 2 s"}
    assert (logs / "passes.log").read_text() == "fine\n"
    word, child = (logs / "hangs.log").read_text().split()
    assert word == "waiting" and _gone(int(child))  # the step's own child was killed with it
    assert "gpu-check FAILED" in printed and "Stand-in GPU (80.0 GiB, driver 1.0" in printed
    assert "fails: failed (exit 2); the end of" in printed and "    boom" in printed
    # a step that would start past the run's deadline does not start
    late = gpu_check.run_step(fake[0], gpu_check.time.monotonic() - 1, logs)
    assert late["status"] == "not run: out of time" and not late["ok"]
