"""`python -m bench extract` runs end to end (tiny model) and records each stage: what it
writes must follow from what it measured (rates from counts and seconds, medians over the
runs, the overlap ratio against the slower stage), whatever the machine's speed."""
import json
import statistics

import pytest

from bench.__main__ import main


def test_bench_extract_smoke_run_writes_results(tmp_path):
    out = tmp_path / "results.json"
    assert main(["extract", "--model", "videocoop-tiny", "--videos", "4", "--frames", "8", "--size", "64x48",
                 "--num-frames", "4", "--batch-size", "8", "--num-workers", "0", "--repeats", "2", "--device", "cpu",
                 "--out", str(out)]) == 0
    results = json.loads(out.read_text())
    assert results["command"].startswith("python -m bench extract --model videocoop-tiny")
    assert set(results["runs"]) == set(results["median"]) == {"decoding", "encoding", "pipeline"}
    for stage, runs in results["runs"].items():
        assert len(runs) == 2, stage
        for run in runs:  # every video, every kept frame, in every stage
            assert run["videos"] == 4 and run["frames"] == 16, (stage, run)
            assert run["seconds"] > 0
            assert run["videos_per_s"] == pytest.approx(run["videos"] / run["seconds"], rel=1e-12)
            assert run["frames_per_s"] == pytest.approx(run["frames"] / run["seconds"], rel=1e-12)
        for key in ("videos_per_s", "frames_per_s", "seconds"):
            assert results["median"][stage][key] == statistics.median(r[key] for r in runs), (stage, key)
    median = {stage: m["frames_per_s"] for stage, m in results["median"].items()}
    ratio = median["pipeline"] / min(median["decoding"], median["encoding"])  # against the slower stage
    assert results["pipeline_vs_slower_stage"] == pytest.approx(ratio, rel=1e-12)
    assert results["met"] == (results["pipeline_vs_slower_stage"] >= results["target"])
    assert results["case"]["videos_per_chunk"] == 2 and results["case"]["kept_frames"] == 4
