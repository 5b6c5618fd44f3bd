"""Renderers: one result list -> markdown (en, ko), JSON, JUnit."""
import json
import xml.etree.ElementTree as ET

from checks.core import CheckResult, Status
from checks.report import RunInfo, to_json, to_junit, to_markdown
from checks.report.markdown import CORE_AUDITS


def result(id, status, **kw):
    return CheckResult(id=id, title=f"title of {id}", status=status, message=f"{id} says {status.value}",
                       problem="the problem", fix="the fix", remediation="do this", metrics={"x": 0.5},
                       evidence=["line one"], location="pkg/mod.py:12", duration=0.25, **kw)


RESULTS = [result("eot-collapse", Status.PASS, extra={"table": {"eot pooling": dict(
               mean_cos=0.9, max_cos=0.95, min_margin=0.05, mean_margin=0.1, effective_rank=3.0)},
               "heatmap": ["shade: ...", "a |##  |"]}),
           result("causal-mask", Status.FAIL), result("host-sync", Status.WARN),
           result("dataset-unpacking", Status.SKIP), result("gradient-flow", Status.ERROR)]
INFO = RunInfo(target="tiny", weights="videocoop-tiny, random:0", foreign_device="meta", command="python -m checks",
               train_command="videocoop train --feature-dir x")


def test_markdown_sections_checklist_conclusion():
    md = to_markdown(RESULTS, INFO)
    assert (md.index("## Summary\n") < md.index("## Audits in detail") < md.index("Traced path")
            < md.index("Summary checklist") < md.index("Conclusion"))
    assert "| 2 | title of causal-mask (`causal-mask`) | ❌ FAIL | causal-mask says fail |" in md  # status at a glance
    assert "| 2 | title of causal-mask (`causal-mask`) | the fix | `pkg/mod.py:12` | ❌ FAIL |" in md
    assert "Do not train yet: 2 audit(s) failed" in md  # FAIL and ERROR
    assert "**If it fails:** do this" in md and "| eot pooling | 0.9000 |" in md and "a |##  |" in md
    assert "videocoop train --feature-dir x" not in md  # no train command while something failed
    core = [result(i, Status.PASS) for i in CORE_AUDITS]
    ok = to_markdown([RESULTS[0], RESULTS[2], *core], INFO)
    assert "Safe to train" in ok and "videocoop train --feature-dir x" in ok and "1 warning(s)" in ok


def test_mostly_skipped_run_is_not_called_safe():
    skipped = [result(i, Status.SKIP) for i in CORE_AUDITS[1:]]
    md = to_markdown([result(CORE_AUDITS[0], Status.PASS), RESULTS[0], *skipped], INFO)
    assert "Safe to train" not in md
    assert f"{len(skipped)} of {len(skipped) + 2} audit(s) were skipped" in md
    assert ", ".join(CORE_AUDITS[1:]) in md and f"{len(skipped)} audit(s) skipped" in md
    assert "학습해도 안전합니다" not in to_markdown(skipped, INFO, lang="ko")


def test_korean_uses_korean_texts_for_known_audits():
    md = to_markdown(RESULTS, INFO, lang="ko")
    assert "종합 체크리스트" in md and "EOT 뒤의 위치는 풀링 결과를 바꾸지 않음" in md and "아직 학습하지 마십시오" in md
    assert md.index("## 요약") < md.index("## 감사 항목별 상세")
    from checks import list_audits
    from checks.report import ko
    assert set(ko.AUDITS) == set(list_audits())  # every audit has its Korean texts


def test_json_is_a_list_with_the_required_keys():
    data = json.loads(to_json(RESULTS))
    assert [d["status"] for d in data] == ["pass", "fail", "warn", "skip", "error"]
    assert all({"id", "status", "metrics", "evidence", "location"} <= set(d) for d in data)


def test_junit_maps_statuses():
    root = ET.fromstring(to_junit(RESULTS).split("\n", 1)[1])
    assert (root.get("tests"), root.get("failures"), root.get("errors"), root.get("skipped")) == ("5", "1", "1", "1")
    kinds = {c.get("name"): [x.tag for x in c if x.tag != "system-out"] for c in root}
    assert kinds == {"eot-collapse": [], "causal-mask": ["failure"], "host-sync": [], "dataset-unpacking": ["skipped"],
                     "gradient-flow": ["error"]}


def test_committed_example_reports_come_from_the_default_run():
    from pathlib import Path

    from checks import list_audits

    root = Path(__file__).resolve().parent.parent / "reports" / "examples"
    for name, words in (("verification.md", "Safe to train"), ("verification.ko.md", "학습해도 안전합니다")):
        text = (root / name).read_text(encoding="utf-8")
        assert words in text and "ViT-B-32, random:0" in text
        assert "`python -m checks" in text
        assert all(f"(`{i}`)" in text for i in list_audits())


def test_step_summary_is_the_checklist_and_the_conclusion():
    from checks.report import to_step_summary

    md = to_step_summary(RESULTS, INFO, "reports/verification.md")
    assert md.startswith("## Verification Report: tiny\n") and md.endswith("\n\n")  # room for the next step's
    assert "| 2 | title of causal-mask (`causal-mask`) | the fix | `pkg/mod.py:12` | ❌ FAIL |" in md
    assert "Do not train yet: 2 audit(s) failed" in md and "`reports/verification.md`" in md
    assert "Audits in detail" not in md and "line one" not in md  # the evidence stays in the full report


def test_a_heatmap_that_fails_half_written_leaves_the_old_one(tmp_path, monkeypatch):
    """The PNG lands atomically (videocoop.utils.files): before, Image.save wrote over the old file in place."""
    import os

    import pytest
    import torch
    from PIL import Image

    from checks.report.heatmap import write_heatmap_png

    path = write_heatmap_png(torch.eye(3), tmp_path / "report_eot_collapse.png")
    before = path.read_bytes()

    def half_written(self, fp, format=None, **kwargs):
        if isinstance(fp, (str, os.PathLike)):  # the old in-place save
            with open(fp, "wb") as fh:
                fh.write(b"\x89PNG half")
        else:
            fp.write(b"\x89PNG half")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", half_written)
    with pytest.raises(OSError, match="disk full"):
        write_heatmap_png(torch.eye(4), path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == [path.name]
