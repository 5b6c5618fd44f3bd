"""python -m checks in-process: --target, reports in every format, exit codes 0 / 1 / 4."""
import json
import xml.etree.ElementTree as ET

import pytest
import torch

from checks.cli import main


def test_clean_target_exits_0_and_writes_every_report(tmp_path, capsys):
    report, js, junit = tmp_path / "r.md", tmp_path / "r.json", tmp_path / "r.xml"
    code = main(["--target", "checks.faults:clean_target", "--report", str(report), "--json", str(js),
                 "--junit", str(junit)])
    assert code == 0, capsys.readouterr()
    text = report.read_text()
    assert "## Audits in detail" in text and "Summary checklist" in text and "Safe to train" in text
    assert "| # | Problem | Fix | Location | Status |" in text
    assert "videocoop-tiny, random:0" in text and "meta" in text
    results = json.loads(js.read_text())
    # extraction-parity: no source videos; distributed-equivalence: no distributed step declared; class-list-response: no other class
    # list declared; temporal-operation: the mean over frames is no temporal head
    assert [r["status"] for r in results] == ["pass"] * 19 + ["skip", "pass", "skip", "pass"] + ["pass", "skip", "skip", "pass"]
    assert ET.parse(junit).getroot().get("failures") == "0"


def test_github_step_summary_gets_the_summary_table_appended(tmp_path, monkeypatch, capsys):
    summary = tmp_path / "step_summary.md"
    summary.write_text("## an earlier step\n\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    report = tmp_path / "r.md"
    code = main(["--target", "checks.faults:plain_attribute_target", "--only", "buffer-device-sync,host-sync",
                 "--report", str(report)])
    assert code == 1
    text = summary.read_text()
    assert text.startswith("## an earlier step\n\n## Verification Report: ")  # appended, as GitHub expects
    assert "| 1 | Buffers follow model.to(device) (`buffer-device-sync`) |" in text and "❌ FAIL |" in text
    assert f"`{report}`" in text and "$GITHUB_STEP_SUMMARY" in capsys.readouterr().out
    monkeypatch.delenv("GITHUB_STEP_SUMMARY")
    assert main(["--target", "checks.faults:clean_target", "--only", "host-sync", "--report", str(report)]) == 0
    assert summary.read_text() == text  # without the variable nothing is written


def test_fault_exits_1_with_failure_in_junit(tmp_path):
    junit = tmp_path / "r.xml"
    code = main(["--target", "checks.faults:plain_attribute_target", "--only", "buffer-device-sync,host-sync",
                 "--report", str(tmp_path / "r.md"), "--junit", str(junit)])
    assert code == 1
    cases = {c.get("name"): c for c in ET.parse(junit).getroot()}
    assert cases["buffer-device-sync"].find("failure") is not None
    assert "Do not train yet" in (tmp_path / "r.md").read_text()


def test_warn_only_exits_0_and_korean_report(tmp_path):
    report = tmp_path / "r.md"
    code = main(["--target", "checks.faults:item_loop_target", "--only", "host-sync", "--lang", "ko",
                 "--report", str(report)])
    assert code == 0
    text = report.read_text()
    assert "종합 체크리스트" in text and "⚠️ WARN" in text and "결론" in text


def test_bare_model_target(tmp_path):
    js = tmp_path / "r.json"
    code = main(["--target", "checks.faults:bare_model", "--only", "causal-mask", "--report", str(tmp_path / "r.md"),
                 "--json", str(js)])
    assert code == 0
    assert [r["status"] for r in json.loads(js.read_text())] == ["pass"]  # audited, not skipped (also exit 0)


def test_bare_model_without_classnames(tmp_path, capsys):
    """Exit 2 saying exactly what a bare model needs; --classnames (a list or a classnames.txt) gives it."""
    argv = ["--target", "checks.faults:bare_model_without_classnames", "--only", "causal-mask,class-order",
            "--report", str(tmp_path / "r.md"), "--json", str(tmp_path / "r.json")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "bare model without class names (5 prompts): give them with --classnames FILE" in err
    assert main(argv + ["--classnames", "a,b,c"]) == 2
    assert "3 class names for VideoFeatureCLIP, whose prompt_learner holds 5 prompts" in capsys.readouterr().err
    names = tmp_path / "classnames.txt"
    names.write_text("".join(f"{c}\n" for c in ["ApplyEyeMakeup", "jump", "brush_hair", "PlayingCello", "ride_bike"]))
    assert main(argv + ["--classnames", str(names)]) == 0
    results = {r["id"]: r for r in json.loads((tmp_path / "r.json").read_text())}
    assert results["causal-mask"]["status"] == "pass"
    assert results["class-order"]["status"] == "skip"  # one class list only: nothing to compare


@pytest.mark.parametrize("argv,words", [
    (["--only", "no-such-audit"], "valid audits"),
    (["--target", "checks.faults"], "pkg.module:function"),
    (["--target", "checks.faults:nothing_here"], "has no function 'nothing_here'"),
    (["--target", "no_such_pkg.mod:f"], "cannot import"),
    (["--lang", "fr"], "invalid choice"),
    (["--target", "checks.faults:broken_factory"], "broken_factory() raised RuntimeError: checkpoint file not found"),
])
def test_usage_errors_exit_2_without_traceback(argv, words, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err


def test_list(capsys):
    assert main(["--list"]) == 0
    assert "eot-collapse" in capsys.readouterr().out


def test_own_model_from_train_flags(tmp_path):
    from videocoop.clip import TINY_MODEL

    report, js = tmp_path / "r.md", tmp_path / "r.json"
    code = main(["--clip-model", TINY_MODEL, "--n-ctx", "4", "--text-pool", "mean", "--report", str(report),
                 "--json", str(js)])
    results = {r["id"]: r for r in json.loads(js.read_text())}
    assert code == 0, {i: r["message"] for i, r in results.items() if r["status"] != "pass"}
    assert results["dataset-unpacking"]["status"] == "pass"  # synthetic UCF101 features, our trainer's loop
    assert results["feature-model-match"]["status"] == "pass"
    assert results["text-encoder-parity"]["metrics"]["pooling"] == "mean"
    assert "videocoop train --feature-dir data/synth/train" in report.read_text()


def test_class_list_response_judges_class_specific_context(tmp_path):
    """--csc: another class list is the rebuilt model with the learned context's rows picked by class (it
    SKIPped, declaring no for_classes), and the scores equal those classes' among all."""
    from videocoop.clip import TINY_MODEL

    js = tmp_path / "r.json"
    code = main(["--clip-model", TINY_MODEL, "--n-ctx", "4", "--csc", "--only", "class-list-response", "--report",
                 str(tmp_path / "r.md"), "--json", str(js)])
    (r,) = json.loads(js.read_text())
    assert code == 0 and r["status"] == "pass", r["message"]
    assert "equal to those classes' logits among all" in r["message"]


def test_train_flags_do_not_mix_with_target(capsys):
    assert main(["--target", "checks.faults:clean_target", "--n-ctx", "4"]) == 2
    assert "do not apply" in capsys.readouterr().err


def test_eot_collapse_heatmap_png_beside_the_report(tmp_path):
    import numpy as np
    from PIL import Image

    report = tmp_path / "r.md"
    assert main(["--target", "checks.faults:clean_target", "--only", "eot-collapse", "--report", str(report)]) == 0
    png = tmp_path / "r_eot_collapse.png"
    assert "![Similarity heatmap](r_eot_collapse.png)" in report.read_text()
    image = torch.from_numpy(np.array(Image.open(png).convert("RGB"))).permute(2, 0, 1)  # [3, k*16, k*16]
    k = image.shape[1] // 16
    assert image.shape == (3, k * 16, k * 16) and k >= 2
    cells = image[:, 8::16, 8::16].int()  # one pixel per class pair
    assert (cells[:, torch.arange(k), torch.arange(k)] == 0).all()  # diagonal black
    # the most similar pair is the reddest cell (least green), the least similar white
    green = cells[1][~torch.eye(k, dtype=torch.bool)]
    assert int(green.min()) == 0 and int(green.max()) == 255 and len(set(green.tolist())) > 2


def test_target_factory_is_called_again_for_a_fresh_model():
    from checks.cli import load_target

    target = load_target("checks.faults:clean_target")
    fresh = target.rebuild()
    assert type(fresh) is type(target.model) and fresh is not target.model


def test_make_verify_writes_where_git_does_not_look():
    """`make verify` must not dirty a checkout: its report (and the heatmap beside it) is git-ignored;
    reports/README.md and the committed examples beside them are not."""
    import shutil
    import subprocess
    from pathlib import Path

    from checks.cli import DEFAULT_REPORT

    root = Path(__file__).resolve().parent.parent
    if shutil.which("git") is None or subprocess.run(["git", "rev-parse"], cwd=root, capture_output=True).returncode:
        pytest.skip("not a git checkout")
    recipe = (root / "Makefile").read_text().split("\nverify:", 1)[1].split("\n\n", 1)[0]
    assert "-m checks" in recipe and "--report" not in recipe  # verify writes the default report
    heatmap = str(Path(DEFAULT_REPORT).with_name(Path(DEFAULT_REPORT).stem + "_eot_collapse.png"))
    for path in (DEFAULT_REPORT, heatmap):
        assert subprocess.run(["git", "check-ignore", "-q", path], cwd=root).returncode == 0, path
    for path in ("reports/README.md", "reports/examples/verification.md", "reports/examples/verification_eot_collapse.png"):
        # --no-index: the rules alone, as a fresh `git add` would apply them
        assert subprocess.run(["git", "check-ignore", "-q", "--no-index", path], cwd=root).returncode == 1, path


def test_resume_compares_the_checkpoint_class_list(tmp_path):
    """--resume audits the checkpoint the run will load: trained on other classes, class-order FAILs."""
    from videocoop.clip import TINY_MODEL
    from videocoop.data import UCF101
    from videocoop.train import save_checkpoint

    out = tmp_path / "run"
    out.mkdir()
    save_checkpoint(out / "checkpoint_last.pt", classnames=list(reversed(UCF101)), trainable={}, epoch=1)
    js = tmp_path / "r.json"
    code = main(["--clip-model", TINY_MODEL, "--n-ctx", "4", "--resume", "--output-dir", str(out), "--only",
                 "class-order", "--report", str(tmp_path / "r.md"), "--json", str(js)])
    (r,) = json.loads(js.read_text())
    assert code == 1 and r["status"] == "fail", r["message"]
    assert f"checkpoint {out / 'checkpoint_last.pt'}'s classnames orders the same 101 names differently" in r["message"]


def test_eval_only_audits_the_checkpoint_eval_only_loads(tmp_path):
    """--eval-only loads the last epoch unless --checkpoint best asks for the one chosen on the
    selection split; the audits read the same one (the old CLI audited checkpoint_best.pt,
    chosen on the test split), and the report says which."""
    from videocoop.clip import TINY_MODEL
    from videocoop.data import UCF101
    from videocoop.train import save_checkpoint

    out = tmp_path / "run"
    out.mkdir()
    save_checkpoint(out / "checkpoint_last.pt", classnames=list(reversed(UCF101)), trainable={}, epoch=5)
    save_checkpoint(out / "checkpoint_best.pt", classnames=list(UCF101), trainable={}, epoch=3,
                    selection={"split": "data/select", "epoch": 3, "select_top1": 61.0, "val_top1": 58.0})
    status = {}
    for which in ("last", "best"):
        js, md = tmp_path / f"{which}.json", tmp_path / f"{which}.md"
        choose = ["--checkpoint", "best"] if which == "best" else []  # the default is the last
        main(["--clip-model", TINY_MODEL, "--n-ctx", "4", "--eval-only", *choose, "--output-dir", str(out), "--only",
              "class-order", "--report", str(md), "--json", str(js)])
        (r,) = json.loads(js.read_text())
        status[which] = r["status"]
        assert f"checkpoint_{which}.pt (epoch {5 if which == 'last' else 3}" in md.read_text()
    assert status == {"last": "fail", "best": "pass"}  # only the last one was trained on other classes
    assert "chosen on data/select: select top-1 61.00%" in (tmp_path / "best.md").read_text()


def test_resume_audits_the_checkpoints_keys(tmp_path):
    """--resume from a checkpoint saved from the DDP-wrapped model ('module.' before every key): checkpoint-strictness
    FAILs naming the prefix, through videocoop's own checkpoint reader."""
    import torch

    from videocoop.clip import TINY_MODEL
    from videocoop.data import UCF101
    from videocoop.train import save_checkpoint

    out = tmp_path / "run"
    out.mkdir()
    save_checkpoint(out / "checkpoint_last.pt", classnames=list(UCF101), epoch=1,
                    trainable={"module.prompt_learner.ctx": torch.zeros(4, 8)})
    js = tmp_path / "r.json"
    code = main(["--clip-model", TINY_MODEL, "--n-ctx", "4", "--resume", "--output-dir", str(out), "--only",
                 "checkpoint-strictness", "--report", str(tmp_path / "r.md"), "--json", str(js)])
    (r,) = json.loads(js.read_text())
    assert code == 1 and r["status"] == "fail", r["message"]
    assert "its learned tensors do not fit this run's model: the state's keys carry the prefix 'module.'" in r["message"]
