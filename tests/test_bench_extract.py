"""`python -m bench extract` runs end to end (tiny model) and records each stage."""
import json

from bench.__main__ import main


def test_bench_extract_smoke_run_writes_results(tmp_path):
    out = tmp_path / "results.json"
    assert main(["extract", "--model", "videocoop-tiny", "--videos", "4", "--frames", "8", "--size", "64x48",
                 "--num-frames", "4", "--batch-size", "8", "--num-workers", "0", "--repeats", "1", "--device", "cpu",
                 "--out", str(out)]) == 0
    results = json.loads(out.read_text())
    assert results["command"].startswith("python -m bench extract --model videocoop-tiny")
    assert set(results["median"]) == {"decoding", "encoding", "pipeline"}
    for stage in results["runs"].values():
        (run,) = stage
        assert run["videos"] == 4 and run["frames"] == 16 and run["frames_per_s"] > 0
    assert results["pipeline_vs_slower_stage"] > 0 and results["case"]["videos_per_chunk"] == 2
