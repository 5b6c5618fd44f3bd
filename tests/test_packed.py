"""A packed split reads back as the per-file dataset does: same items, same sampling."""
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from videocoop.data import (
    FeatureDataset,
    MissingValidationClassWarning,
    PackedFeatureDataset,
    collate_samples,
    frame_offsets,
    is_packed,
    pack,
    write_feature_info,
)
from videocoop.utils.errors import VideoCoopError

DIM = 16


@pytest.fixture
def split(tmp_path):
    """Three classes, videos of different lengths, in both file formats, with features.json."""
    rng = np.random.default_rng(0)
    src = tmp_path / "src"
    for c, name in enumerate(["archery", "bowling", "yoga"]):
        (src / name).mkdir(parents=True)
        for v in range(3):
            x = rng.standard_normal((3 + 2 * v + c, DIM)).astype(np.float32)  # [T, D]
            if v % 2:
                torch.save(torch.from_numpy(x), src / name / f"{name}_{v}.pt")
            else:
                np.save(src / name / f"{name}_{v}.npy", x)
    write_feature_info(src, {"clip_model": "ViT-B-32", "weights": "random:0", "num_frames": 0, "dim": DIM})
    return src


def _items(dataset, seed):
    torch.manual_seed(seed)
    return [dataset[i] for i in range(len(dataset))]


@pytest.mark.parametrize("num_frames,train", [(None, False), (4, False), (4, True)])
def test_packed_items_equal_per_file_items(split, tmp_path, num_frames, train):
    index = pack(split, tmp_path / "packed", dtype="float32")
    assert is_packed(tmp_path / "packed") and index["videos"] == 9
    per_file = FeatureDataset(split, num_frames=num_frames, train=train)
    packed = PackedFeatureDataset(tmp_path / "packed", num_frames=num_frames, train=train)
    assert packed.classnames == per_file.classnames and packed.dim == per_file.dim and len(packed) == len(per_file)
    assert packed.info == per_file.info and packed.labels == per_file.labels
    for want, got in zip(_items(per_file, 7), _items(packed, 7)):
        assert torch.equal(got.features, want.features) and got.features.dtype == torch.float32
        assert got.label == want.label
        assert got.meta == want.meta


def test_batched_fetch_equals_item_by_item(split, tmp_path):
    pack(split, tmp_path / "packed", dtype="float32")
    packed = PackedFeatureDataset(tmp_path / "packed", num_frames=5, train=True)
    order = [4, 0, 8, 3, 3]
    torch.manual_seed(3)
    batched = packed.__getitems__(order)
    torch.manual_seed(3)
    single = [packed[i] for i in order]
    for a, b in zip(batched, single):
        assert torch.equal(a.features, b.features) and a.label == b.label and a.meta == b.meta
    # Through a DataLoader (which uses __getitems__) the batches are the per-file dataset's.
    per_file = FeatureDataset(split, num_frames=5, train=True)
    batches = []
    for dataset in (per_file, packed):
        torch.manual_seed(5)
        loader = DataLoader(dataset, batch_size=4, shuffle=True, collate_fn=collate_samples,
                            generator=torch.Generator().manual_seed(1))
        batches.append(list(loader))
    for (fa, la, ma), (fb, lb, mb) in zip(*batches):
        assert torch.equal(fa, fb) and torch.equal(la, lb) and ma["video_id"] == mb["video_id"]


@pytest.mark.parametrize("world_size", [2, 3, 4])
def test_every_share_of_every_last_global_batch_loads_per_file_and_packed(split, tmp_path, world_size):
    """Under torchrun each process loads its share of each global batch; when the last global
    batch holds fewer videos than there are processes (0 < n % batch < world), some shares are
    empty. The packed split indexed its memory map with ``np.array([])`` (float64) there and
    raised IndexError; per file an empty share loaded. Every remainder of batch 4, for both
    kinds: the shares are loaded through the trainer's own loaders and put back together into
    the one-process batches, an empty share arriving as None (the step it still joins)."""
    import types

    from videocoop.train.config import TrainConfig
    from videocoop.train.trainer import _loaders
    from videocoop.utils.distributed import World

    pack(split, tmp_path / "packed", dtype="float32")
    cfg = TrainConfig(feature_dir=str(split), batch_size=4, seed=3)
    kinds = {"per file": FeatureDataset(split, num_frames=4, train=True, seed=3),
             "packed": PackedFeatureDataset(tmp_path / "packed", num_frames=4, train=True, seed=3)}
    for kind, dataset in kinds.items():
        for n in range(1, len(dataset) + 1):  # n % 4: every remainder, and a lone partial batch
            part = dataset.subset(range(n))

            def batches(world):
                setup = types.SimpleNamespace(cfg=cfg, world=world, train_set=part, val_set=None,
                                              device=torch.device("cpu"))
                loader, _ = _loaders(setup)
                loader.batch_sampler.set_epoch(2)
                part.set_epoch(2)
                return list(loader)

            whole = batches(World())
            shares = [batches(World(rank, world_size)) for rank in range(world_size)]
            for step, want in enumerate(whole):
                got = [shares[rank][step] for rank in range(world_size)]
                empty = sum(g is None for g in got)
                assert empty == max(0, world_size - len(want.label)), (kind, n, step)
                ids = {v for g in got if g is not None for v in g.meta["video_id"]}
                assert ids == set(want.meta["video_id"]), (kind, n, step)
                for g in got:
                    if g is not None:  # each video's frames as one process reads them
                        for b, vid in enumerate(g.meta["video_id"]):
                            assert torch.equal(g.features[b], want.features[want.meta["video_id"].index(vid)])


EXPECTED_OFFSETS = [0.22348734001973736, 0.5175178839919813]


def test_training_frames_are_a_function_of_seed_epoch_and_video(split, tmp_path):
    # the same video gets the same frames alone, in any batch, per file or packed; another
    # epoch or seed draws others
    pack(split, tmp_path / "packed", dtype="float32")
    packed = PackedFeatureDataset(tmp_path / "packed", num_frames=3, train=True, seed=4)
    per_file = FeatureDataset(split, num_frames=3, train=True, seed=4)
    for epoch in (1, 2):
        packed.set_epoch(epoch)
        per_file.set_epoch(epoch)
        alone = [packed[i].features for i in range(len(packed))]
        for order in ([0, 1, 2, 3, 4, 5, 6, 7, 8], [8, 3, 5], [2]):
            batched = packed.__getitems__(order)
            for b, i in enumerate(order):
                assert torch.equal(batched[b].features, alone[i])
                assert torch.equal(per_file[i].features, alone[i])
    packed.set_epoch(1)
    first = [packed[i].features for i in range(len(packed))]
    packed.set_epoch(2)
    assert any(not torch.equal(a, packed[i].features) for i, a in enumerate(first))
    other_seed = PackedFeatureDataset(tmp_path / "packed", num_frames=3, train=True, seed=5)
    other_seed.set_epoch(2)
    assert any(not torch.equal(other_seed[i].features, packed[i].features) for i in range(len(packed)))


def test_frame_offsets_are_uniform_and_reproducible():
    a = frame_offsets(3, 7, np.arange(20000), 8)  # [20000, 8]
    assert a.shape == (20000, 8) and 0 <= a.min() and a.max() < 1
    assert abs(a.mean() - 0.5) < 0.005 and abs(a.std() - 12 ** -0.5) < 0.005
    assert abs(np.corrcoef(a[:, 0], a[:, 1])[0, 1]) < 0.03 and abs(np.corrcoef(a[:-1, 0], a[1:, 0])[0, 1]) < 0.03
    assert np.array_equal(frame_offsets(3, 7, [5, 9], 8), a[[5, 9]])
    # pinned: the same numbers on every machine and release (a resumed run depends on it)
    np.testing.assert_allclose(frame_offsets(0, 1, [0], 2)[0], EXPECTED_OFFSETS, rtol=0, atol=1e-15)


def test_half_precision_packing_rounds_to_fp16(split, tmp_path):
    pack(split, tmp_path / "half")
    per_file = FeatureDataset(split)
    packed = PackedFeatureDataset(tmp_path / "half")
    assert np.load(tmp_path / "half" / "features.npy", mmap_mode="r").dtype == np.float16
    for i in range(len(packed)):
        assert torch.equal(packed[i].features, per_file[i].features.half().float())


def test_validation_split_takes_the_training_class_order(split, tmp_path):
    pack(split, tmp_path / "packed", dtype="float32")
    training = ["zumba", "yoga", "archery", "bowling"]
    with pytest.warns(MissingValidationClassWarning, match="zumba"):
        packed = PackedFeatureDataset(tmp_path / "packed", classnames=training)
    with pytest.warns(MissingValidationClassWarning):
        per_file = FeatureDataset(split, classnames=training)
    assert packed.classnames == training
    label_of = {packed[i].meta["video_id"]: packed[i].label for i in range(len(packed))}
    assert label_of == {per_file[i].meta["video_id"]: per_file[i].label for i in range(len(per_file))}
    with pytest.raises(VideoCoopError, match="unknown to training"):
        PackedFeatureDataset(tmp_path / "packed", classnames=["archery", "bowling"])


def test_packed_errors_name_the_problem(split, tmp_path):
    with pytest.raises(VideoCoopError, match="not a packed split"):
        PackedFeatureDataset(split)
    with pytest.raises(VideoCoopError, match="float16"):
        pack(split, tmp_path / "x", dtype="int8")
    pack(split, tmp_path / "packed")
    with pytest.raises(VideoCoopError, match="dim 16"):
        PackedFeatureDataset(tmp_path / "packed", dim=512)


def test_pack_command(split, tmp_path, capsys):
    from videocoop.cli import ExitCode, main

    assert main(["pack", str(split), str(tmp_path / "packed"), "--dtype", "float32"]) == ExitCode.OK
    assert "packed 9 videos" in capsys.readouterr().out
    assert len(PackedFeatureDataset(tmp_path / "packed")) == 9
    assert main(["pack", str(tmp_path / "missing"), str(tmp_path / "out")]) == ExitCode.USAGE


def test_open_feature_dataset_picks_the_reader(split, tmp_path):
    from videocoop.data import open_feature_dataset

    pack(split, tmp_path / "packed")
    assert isinstance(open_feature_dataset(tmp_path / "packed", num_frames=2), PackedFeatureDataset)
    assert isinstance(open_feature_dataset(split, num_frames=2), FeatureDataset)


@pytest.mark.parametrize(
    "damage, match",
    [
        (lambda p: (p / "packed.json").write_text('{"format": "videocoop-pa'), r"packed\.json, line 1, column 12: not valid JSON"),
        (lambda p: (p / "packed.json").write_text("[]"), r"packed\.json: holds \[\] \(a list\), not a JSON object"),
        (lambda p: (p / "features.npy").write_bytes((p / "features.npy").read_bytes()[:200]), r"features\.npy: not a valid \.npy file: it is cut short"),
        (lambda p: (p / "offsets.npy").unlink(), r"offsets\.npy: missing from the packed split"),
        (lambda p: (p / "labels.npy").write_bytes(b"x" * 100), r"labels\.npy: not a valid \.npy file: it is damaged or in another format; "),
        (lambda p: np.save(p / "offsets.npy", np.load(p / "offsets.npy")[:-1]), r"offsets\.npy must rise"),
        (lambda p: np.save(p / "offsets.npy", np.load(p / "offsets.npy") * 2), r"offsets\.npy must rise"),
        (lambda p: np.save(p / "labels.npy", np.load(p / "labels.npy")[:-1]), r"labels\.npy must hold 9"),
        (lambda p: np.save(p / "labels.npy", np.load(p / "labels.npy") + 3), r"labels\.npy must hold 9"),
    ],
)
def test_a_damaged_packed_split_is_refused_by_name(split, tmp_path, damage, match):
    # a VideoCoopError: the CLI exits 2 with the message, no traceback
    packed = tmp_path / "packed"
    pack(split, packed, dtype="float32")
    damage(packed)
    with pytest.raises(VideoCoopError, match=match):
        PackedFeatureDataset(packed, num_frames=2)


def test_pack_refuses_values_that_overflow_float16(split, tmp_path):
    np.save(split / "yoga" / "yoga_0.npy", np.full((3, DIM), 1e5, dtype=np.float32))
    with pytest.raises(VideoCoopError, match=r"yoga_0\.npy has values beyond float16's range"):
        pack(split, tmp_path / "packed")
    assert not is_packed(tmp_path / "packed")
    pack(split, tmp_path / "packed32", dtype="float32")  # float32 keeps them
    kept = PackedFeatureDataset(tmp_path / "packed32")
    (yoga_0,) = [kept[i].features for i in range(len(kept)) if kept[i].meta["video_id"] == "yoga_0"]
    assert torch.equal(yoga_0, torch.full((3, DIM), 1e5))
