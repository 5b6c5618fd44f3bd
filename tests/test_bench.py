"""`python -m bench` runs end to end (tiny model) and records what it measured."""
import json

import pytest
import torch

from bench.__main__ import main
from bench.step import VARIANTS


def test_bench_smoke_run_writes_results(tmp_path):
    out = tmp_path / "results.json"
    args = ["--tower", "videocoop-tiny", "--n-ctx", "4", "--batch", "4", "--frames", "2", "--repeats", "1",
            "--baseline-repeats", "1", "--loader-videos", "64", "--threads", "1", "--out", str(out)]
    assert main(args) == 0
    results = json.loads(out.read_text())
    assert results["command"].startswith("python -m bench --tower videocoop-tiny")
    (case,) = results["cases"]
    assert [r["path"] for r in case["rows"]] == ["seed-faithful", *VARIANTS]
    assert case["auto_path"] == "split" and sum(r["auto"] for r in case["rows"]) == 1
    for row in case["rows"]:
        assert row["equal"], row  # every path computed the baseline's numbers in this run
        assert row["median_s"] > 0 and row["items_per_s"] == pytest.approx(4 / row["median_s"])
    assert [r["path"] for r in results["loader"]["rows"]][-1].startswith("packed")
    assert all(r["videos_per_s"] > 0 for r in results["loader"]["rows"])
