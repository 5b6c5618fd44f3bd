"""`python -m bench` runs end to end (tiny model) and records what it measured."""
import json
import statistics

import pytest

from bench.__main__ import main
from bench.step import VARIANTS


def test_bench_smoke_run_writes_results(tmp_path, capsys):
    out = tmp_path / "results.json"
    args = ["--tower", "videocoop-tiny", "--n-ctx", "4", "--batch", "4", "--frames", "2", "--repeats", "3",
            "--baseline-repeats", "1", "--loader-videos", "64", "--threads", "1", "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out.splitlines()
    results = json.loads(out.read_text())
    assert results["command"].startswith("python -m bench --tower videocoop-tiny")
    (case,) = results["cases"]
    assert [r["path"] for r in case["rows"]] == ["seed-faithful", *VARIANTS]
    assert case["auto_path"] == "split" and sum(r["auto"] for r in case["rows"]) == 1
    baseline = case["rows"][0]
    for row in case["rows"]:
        assert row["equal"], row  # every path computed the baseline's numbers in this run
        # the figures come from the recorded samples: one positive time per timed step, their median
        times = row["times_s"]
        assert len(times) == len(row["cpu_times_s"]) == (1 if row is baseline else 3)
        assert min(times) > 0 and row["median_s"] == statistics.median(times)
        # the printed ratio is the baseline's measured median over this path's
        ratio = statistics.median(baseline["times_s"]) / statistics.median(times)
        assert row["speedup"] == pytest.approx(ratio)
        (line,) = [x for x in printed if f"│ {row['path']} " in x]
        assert f" {ratio:.1f}x " in line, line
    assert [r["path"] for r in results["loader"]["rows"]][-1].startswith("packed")
    for row in results["loader"]["rows"]:
        assert len(row["rates"]) == 3 and min(row["rates"]) > 0 and row["videos_per_s"] == statistics.median(row["rates"])
    # make gpu-check's summary reads this same results layout
    from bench.gpu_check import bench_lines

    (line,) = bench_lines(results)
    assert line.lstrip().startswith(case["label"]) and "auto shared-split" in line and "all equal" in line
