"""Training under torchrun: two CPU processes (gloo) compute what one process computes.

The end-to-end tests launch ``python -m torch.distributed.run --nproc-per-node 2`` on the
real command line. Tolerance: the context after training agrees to RTOL relative (the
processes sum gradients and losses in another order than one process; measured ~6e-7);
validation counts (top-1, top-5, per class) agree exactly.
"""
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from videocoop.clip import TINY_MODEL
from videocoop.data.synthetic import synthesize
from videocoop.train import TrainConfig, fit, load_checkpoint
from videocoop.train.ddp import GlobalBatchSampler, ShardSampler
from videocoop.utils.distributed import World, device_for, init_process_group
from videocoop.utils.errors import VideoCoopError

RTOL = 1e-5
EPOCHS = 3
TESTS = Path(__file__).parent


# --------------------------------------------------------------------------- the global batches


@pytest.mark.parametrize("n, batch", [(45, 8), (17, 4), (9, 8), (3, 5)])
def test_global_batches_do_not_depend_on_the_number_of_processes(n, batch):
    one = GlobalBatchSampler(n, batch, seed=3)
    one.set_epoch(2)
    expected = list(one)
    for size in (2, 3, 4):
        shares = []
        for rank in range(size):
            s = GlobalBatchSampler(n, batch, seed=3, world=World(rank, size))
            s.set_epoch(2)
            shares.append(list(s))
            assert len(s) == len(one)
        for step, want in enumerate(expected):
            got = [shares[r][step] for r in range(size)]
            assert sorted(i for share in got for i in share) == sorted(want)  # every video once
            assert max(map(len, got)) - min(map(len, got)) <= 1  # shares differ by one at most
    other = GlobalBatchSampler(n, batch, seed=3)
    other.set_epoch(3)
    assert n < 4 or list(other) != expected  # another epoch, another order


def test_shards_partition_the_classes_and_the_videos():
    for n in range(13):
        for size in range(1, 6):
            classes = [i for r in range(size) for i in range(n)[World(r, size).shard(n)]]
            assert classes == list(range(n))  # contiguous, in rank order
            videos = sorted(i for r in range(size) for i in ShardSampler(n, World(r, size)))
            assert videos == list(range(n))


def test_each_process_takes_its_own_gpu_or_is_told_why_not():
    """The one device picker (training and extraction): cuda means cuda:LOCAL_RANK under
    torchrun; another explicit index is refused rather than sharing a GPU."""
    two = World(1, 2, local_rank=1)
    assert device_for(two, torch.device("cuda")) == torch.device("cuda", 1)
    assert device_for(two, torch.device("cuda", 1)) == torch.device("cuda", 1)
    assert device_for(two, torch.device("cpu")) == torch.device("cpu")
    assert device_for(World(), torch.device("cuda", 3)) == torch.device("cuda", 3)  # one process: as asked
    with pytest.raises(VideoCoopError, match="each process takes cuda:LOCAL_RANK"):
        device_for(two, torch.device("cuda", 0))


def test_one_process_gathers_its_own_object_and_starts_no_group():
    assert World().gather_object({"written": 3}) == [{"written": 3}]
    assert init_process_group(World(), backend="gloo") is False


# --------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """45 training videos in batches of 8: the last global batch (5) splits unevenly."""
    out = tmp_path_factory.mktemp("dist")
    return synthesize(out / "data", clip_model=TINY_MODEL, n_classes=5, train_per_class=9, val_per_class=4,
                      noise=3.0, num_frames=6, max_frames=10, seed=4)


def _flags(data, out, *extra):
    return ["train", "--feature-dir", data["train"], "--val-feature-dir", data["val"], "--epochs", str(EPOCHS),
            "--batch-size", "8", "--num-frames", "4", "--output-dir", str(out), "--progress", "plain",
            "--temporal-agg", "transformer", *extra]


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (Linux's /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "pid (comm)": state, ppid, ...
            if int(fields[1]) == pid:
                found.append(int(stat.parent.name))
    return found


def _torchrun(argv, script=None, timeout=300, **env):
    """Run ``argv`` under a real torchrun launch of 2 processes; a launch still running after
    ``timeout`` seconds (processes waiting on each other's collectives) fails the test, and
    its whole process group (torchrun and its workers) is killed."""
    target = [str(script)] if script else ["-m", "videocoop"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *target, *argv]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **env}, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        # torchrun starts each worker in a session of its own: kill theirs, then torchrun's
        for pid in [proc.pid, *_children(proc.pid)][::-1]:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"torchrun {' '.join(argv)} still running after {timeout} s (a hang); stderr:\n{err[-3000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _ctx(out):
    return load_checkpoint(out / "checkpoint_last.pt")["trainable"]


def _close(a, b):
    for k in a:
        scale = a[k].abs().max()
        assert ((a[k] - b[k]).abs().max() / scale).item() <= RTOL, k


def _rows(out):
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"}
            for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def one(data, tmp_path_factory):
    """The reference: one process, in this process."""
    out = tmp_path_factory.mktemp("one") / "run"
    cfg = TrainConfig(feature_dir=data["train"], val_feature_dir=data["val"], epochs=EPOCHS, batch_size=8,
                      num_frames=4, output_dir=str(out), progress="none", temporal_agg="transformer")
    fit(cfg)
    return out


def test_two_processes_with_sharded_text_train_to_one_processs_numbers(data, one, tmp_path):
    proc = _torchrun(_flags(data, tmp_path / "two", "--shard-text"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 processes (torchrun), global batch 8, text sharded" in proc.stdout
    _close(_ctx(one), _ctx(tmp_path / "two"))
    for a, b in zip(_rows(one), _rows(tmp_path / "two")):
        assert a["val_top1"] == b["val_top1"] and a["val_top5"] == b["val_top5"]
        for key in ("train_loss", "val_loss"):
            assert (a[key] is None and b[key] is None) or a[key] == pytest.approx(b[key], rel=RTOL), key
    assert json.loads((tmp_path / "two" / "summary.json").read_text())["processes"] == 2


def test_rich_progress_under_torchrun_finishes_with_one_processs_numbers(data, one, tmp_path):
    """Rank 0 shows per-batch bars, the others show nothing: every collective (the divergence
    check's all-reduces) must still be called at the same steps on every rank. The old
    engine ran the check on rank 0 after every step because its bars read the loss, and on
    the others every --check-every steps: the launch never finished (> 240 s; --progress
    plain: 12 s). 6 steps an epoch, --check-every 4: rank 0 and rank 1 would differ at step 1."""
    out = tmp_path / "rich"
    proc = _torchrun(_flags(data, out, "--progress", "rich", "--check-every", "4"), timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _close(_ctx(one), _ctx(out))
    assert [r["epoch"] for r in _rows(out)] == [0, 1, 2, 3]


def test_a_packed_split_whose_last_batch_leaves_a_process_nothing_trains_as_one_process(data, tmp_path):
    """45 videos in global batches of 4 over 2 processes: the last batch (1 video) leaves rank 1
    an empty share (0 < n % batch < world, as UCF101's 9537 videos at 32 on 2 GPUs). A packed
    split crashed there (IndexError); it must train to one process's numbers on the same
    videos per file. Every remainder for 2-4 processes: tests/test_packed.py."""
    from videocoop.data import pack

    pack(data["train"], tmp_path / "packed", dtype="float32")  # float32: the per-file values exactly
    extra = ("--batch-size", "4", "--epochs", "1")
    proc = _torchrun([*_flags(data, tmp_path / "two", *extra), "--feature-dir", str(tmp_path / "packed")])
    assert proc.returncode == 0, proc.stderr[-3000:]
    ref = tmp_path / "one"
    fit(TrainConfig(feature_dir=data["train"], val_feature_dir=data["val"], epochs=1, batch_size=4, num_frames=4,
                    output_dir=str(ref), progress="none", temporal_agg="transformer"))
    _close(_ctx(ref), _ctx(tmp_path / "two"))


def test_validation_under_two_processes_equals_one_process_exactly(data, one, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(one, run)
    alone = fit(TrainConfig(feature_dir=data["train"], val_feature_dir=data["val"], output_dir=str(run),
                            eval_only=True, progress="none"))
    proc = _torchrun(["train", "--feature-dir", data["train"], "--val-feature-dir", data["val"], "--output-dir",
                      str(run), "--eval-only", "--progress", "none"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = json.loads((run / "eval.json").read_text())
    assert (two["top1"], two["top5"], two["per_class"]) == (alone["top1"], alone["top5"], alone["per_class"])
    assert two["loss"] == pytest.approx(alone["loss"], rel=1e-6)  # float32 sums of other batch shapes


def test_a_failing_rank_ends_both_and_resume_reaches_the_uninterrupted_numbers(data, one, tmp_path):
    out = tmp_path / "run"
    # without sharded text this time; the resume below shards it: both must match one process
    proc = _torchrun(_flags(data, out, "--no-shard-text"), script=TESTS / "dist_fail.py", FAIL_EPOCH="3",
                     FAIL_RANK="1")
    assert proc.returncode != 0
    assert "videocoop (rank 1): error: planted failure on rank 1" in proc.stderr
    assert load_checkpoint(out / "checkpoint_last.pt")["epoch"] == 2  # the last complete one
    assert [r["epoch"] for r in _rows(out)] == [0, 1, 2]

    moved = tmp_path / "one_process_resume"  # the same checkpoint, resumed by another number of processes
    shutil.copytree(out, moved)

    proc = _torchrun(_flags(data, out, "--resume", "--shard-text"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    _close(_ctx(one), _ctx(out))
    assert [r["epoch"] for r in _rows(out)] == [0, 1, 2, 3]

    cfg = TrainConfig(feature_dir=data["train"], val_feature_dir=data["val"], epochs=EPOCHS, batch_size=8,
                      num_frames=4, output_dir=str(moved), progress="none", temporal_agg="transformer", resume=True)
    fit(cfg)
    _close(_ctx(one), _ctx(moved))
    assert "the run had 2 process(es), now 1: the same global batches follow" in (moved / "log.txt").read_text()


def test_the_audits_see_through_a_ddp_wrapped_model(tiny_clip, classnames, tmp_path, monkeypatch):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from checks import Status, faults, run_audits
    from checks.core import AuditTarget
    from videocoop.train.ddp import TrainStep

    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        target = faults.with_data(*tiny_clip, classnames)
        model = target.model
        target.model = DistributedDataParallel(TrainStep(model, World(), shard_text=False))
        assert AuditTarget.coerce(target).model is model
        results = run_audits(target, ["buffer-device-sync", "text-encoder-parity", "gradient-flow", "dataset-unpacking"])
        assert [r.status for r in results] == [Status.PASS] * 4, [(r.id, r.message) for r in results]
        assert AuditTarget.coerce(DistributedDataParallel(model)).model is model  # a bare wrapped model too
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("switch", ["forward_sync_buffers", "broadcast_buffers"])
def test_wrap_turns_off_the_buffer_sync_under_the_name_this_torch_knows(switch, monkeypatch):
    """ddp.wrap: recent torch names the per-forward buffer sync forward_sync_buffers (and
    deprecates broadcast_buffers); older ones (the 2.5 floor) have only broadcast_buffers.
    Both releases' signatures, faked: the switch this torch knows is passed, False."""
    import videocoop.train.ddp as ddp

    made = {}

    class Recent:
        def __init__(self, module, device_ids=None, broadcast_buffers=True, forward_sync_buffers=True):
            made.update(module=module, device_ids=device_ids, broadcast_buffers=broadcast_buffers,
                        forward_sync_buffers=forward_sync_buffers)

    class Older:
        def __init__(self, module, device_ids=None, broadcast_buffers=True):
            made.update(module=module, device_ids=device_ids, broadcast_buffers=broadcast_buffers)

    monkeypatch.setattr(ddp, "DistributedDataParallel", Recent if switch == "forward_sync_buffers" else Older)
    step = torch.nn.Linear(2, 2)
    ddp.wrap(step, torch.device("cpu"))
    assert made.pop(switch) is False and made.pop("module") is step and made.pop("device_ids") is None
    assert made == ({"broadcast_buffers": True} if switch == "forward_sync_buffers" else {})
    ddp.wrap(step, torch.device("cuda", 1))
    assert made["device_ids"] == [1]
