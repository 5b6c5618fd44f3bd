"""FeatureDataset, VideoSample, collate and features.json: the contract and every error."""
import json
import warnings

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from videocoop.data import (
    FeatureDataset,
    MissingValidationClassWarning,
    VideoSample,
    check_feature_info,
    collate_samples,
    frame_indices,
    frame_offsets,
    read_feature_info,
    segment_frames,
    write_feature_info,
)
from videocoop.utils.errors import VideoCoopError

D = 8


def _write(root, cls, name, array, fmt="pt"):
    folder = root / cls
    folder.mkdir(parents=True, exist_ok=True)
    if fmt == "npy":
        np.save(folder / f"{name}.npy", np.asarray(array))
    elif fmt == "dict":
        torch.save({"features": torch.as_tensor(array), "fps": 1}, folder / f"{name}.pt")
    else:
        torch.save(torch.as_tensor(array), folder / f"{name}.pt")


@pytest.fixture
def folder(tmp_path):
    """Three classes; every storage format; videos of 3, 5 and 4 frames."""
    root = tmp_path / "train"
    g = torch.Generator().manual_seed(0)
    _write(root, "b_class", "v1", torch.randn(3, D, generator=g))
    _write(root, "b_class", "v2", torch.randn(5, D, generator=g).numpy(), fmt="npy")
    _write(root, "a_class", "v3", torch.randn(4, D, generator=g), fmt="dict")
    _write(root, "c_class", "v4", torch.randn(4, D, generator=g).double())
    return root


def test_items_and_batches_unpack_as_features_label_meta(folder):
    ds = FeatureDataset(folder)
    assert ds.classnames == ["a_class", "b_class", "c_class"]  # sorted folder names
    assert ds.dim == D and len(ds) == 4
    features, label, meta = ds[0]
    assert isinstance(ds[0], VideoSample)
    assert features.shape == (4, D) and features.dtype == torch.float32 and label == 0
    assert meta == {"video_id": "v3", "path": str(folder / "a_class" / "v3.pt"), "num_frames": 4}
    labels = sorted(ds[i].label for i in range(len(ds)))
    assert labels == [0, 1, 1, 2]

    batch = next(iter(DataLoader(ds, batch_size=4, collate_fn=collate_samples)))
    features, labels, meta = batch
    assert features.shape == (4, 5, D) and labels.dtype == torch.long and labels.shape == (4,)
    assert meta["num_frames"] == [4, 3, 5, 4] and meta["mask"].shape == (4, 5)
    assert meta["mask"].sum(1).tolist() == [4, 3, 5, 4]
    # padded frames are zeros and the real ones are the items' own
    assert torch.equal(features[1, :3], ds[1].features) and not features[1, 3:].any()


def test_padding_and_mask_give_the_same_video_features_as_unpadded(folder, tiny_clip):
    from videocoop.model import VideoFeatureCLIP

    clip_model, tokenizer = tiny_clip
    ds = FeatureDataset(folder)
    model = VideoFeatureCLIP(ds.classnames, clip_model, tokenizer, n_ctx=2)
    model.embed_dim = D  # the temporal path only; the tiny CLIP's width is not D
    features, _, meta = collate_samples([ds[i] for i in range(len(ds))])
    for agg in ("mean", "max"):
        model.temporal_agg = agg
        batched = model.encode_video(features, meta["mask"])  # [4, D]
        single = torch.cat([model.encode_video(ds[i].features[None]) for i in range(len(ds))])
        torch.testing.assert_close(batched, single)


def test_equal_lengths_need_no_mask(folder):
    ds = FeatureDataset(folder, num_frames=6)
    batch = collate_samples([ds[i] for i in range(len(ds))])
    assert batch.features.shape == (4, 6, D) and "mask" not in batch.meta


def test_uniform_sampling_deterministic_in_eval_random_in_train(folder):
    assert frame_indices(16, 4).tolist() == [2, 6, 10, 14]
    assert frame_indices(3, 6).tolist() == [0, 0, 1, 1, 2, 2]  # short videos repeat frames
    draws = segment_frames([16] * 200, 4, frame_offsets(seed=0, epoch=0, indices=range(200), num_frames=4))  # [200, 4]
    for k in range(4):  # one frame from each quarter, every frame of it reachable
        assert set(draws[:, k].tolist()) == set(range(4 * k, 4 * k + 4))
    ev = FeatureDataset(folder, num_frames=2)
    raw = torch.load(folder / "b_class" / "v1.pt")  # [3, D]: item 1 (classes sorted, then files)
    assert torch.equal(ev[1].features, raw[[0, 2]])  # the middles of 2 segments of 3 frames: 0.75 and 2.25
    tr = FeatureDataset(folder, num_frames=2, train=True)
    raw = torch.from_numpy(np.load(folder / "b_class" / "v2.npy"))  # [5, D]: item 2
    seen = set()
    for epoch in range(20):  # the draw is fixed by (seed, epoch, video), whatever the global RNGs hold
        tr.set_epoch(epoch)
        first = tr[2].features
        torch.manual_seed(1000 + epoch)
        np.random.seed(epoch)
        fresh = FeatureDataset(folder, num_frames=2, train=True)  # another reader: another process, say
        fresh.set_epoch(epoch)
        want = raw[segment_frames([5], 2, frame_offsets(seed=0, epoch=epoch, indices=[2], num_frames=2))[0]]
        assert torch.equal(first, want) and torch.equal(tr[2].features, want) and torch.equal(fresh[2].features, want)
        seen.add(tuple(first[:, 0].tolist()))  # 5 frames -> 2 segments
    assert len(seen) > 1


def test_classnames_txt_sets_the_order_and_validation_uses_training_classes(folder, tmp_path):
    (folder / "classnames.txt").write_text("c_class\na_class\nb_class\n")
    ds = FeatureDataset(folder)
    assert ds.classnames == ["c_class", "a_class", "b_class"] and ds[0].label == 0
    val = tmp_path / "val"
    _write(val, "b_class", "x", torch.randn(2, D))
    with pytest.warns(MissingValidationClassWarning, match="a_class"):
        v = FeatureDataset(val, classnames=ds.classnames)
    assert v.classnames == ds.classnames and v[0].label == 2
    _write(val, "z_class", "y", torch.randn(2, D))
    with pytest.raises(VideoCoopError, match=r"unknown to training: \[.z_class.\]"):
        FeatureDataset(val, classnames=ds.classnames)


def test_manifest(folder):
    manifest = folder / "list.csv"
    manifest.write_text("path,label\nb_class/v1.pt,b_class\nc_class/v4.pt,c_class\n")
    ds = FeatureDataset(folder, manifest=manifest)
    assert ds.classnames == ["b_class", "c_class"] and [ds[i].label for i in range(2)] == [0, 1]
    manifest.write_text("path,label\nb_class/nope.pt,b_class\n")
    with pytest.raises(VideoCoopError, match="nope.pt"):
        FeatureDataset(folder, manifest=manifest)


@pytest.mark.parametrize(
    "content, match",
    [
        (b"this is not a tensor", r"bad\.pt: not a valid \.pt file: it is damaged or in another format; a valid one holds"),
        (torch.ones(3, D + 1), "has dim 9; the chosen CLIP embeds in 8"),
        (torch.tensor([[float("nan")] * D]), "NaN or inf"),
        (torch.tensor([[float("inf")] * D]), "NaN or inf"),
        (torch.ones(2, 3, D), r"shape \[2, 3, 8\]"),
        (torch.ones(0, D), "T >= 1"),
        ({"feats": torch.ones(2, D)}, "without key 'features'"),
    ],
)
def test_bad_files_are_named(folder, content, match):
    bad = folder / "b_class" / "bad.pt"
    if isinstance(content, bytes):
        bad.write_bytes(content)
    else:
        torch.save(content, bad)
    with pytest.raises(VideoCoopError, match=match) as e:
        FeatureDataset(folder, dim=D)
    assert str(bad) in str(e.value)


def test_widths_must_agree_without_a_clip(folder):
    _write(folder, "c_class", "wide", torch.randn(2, D + 2))
    with pytest.raises(VideoCoopError, match="wide.pt: has dim 10"):
        FeatureDataset(folder)


def test_empty_class_folder_and_no_files(folder, tmp_path):
    (folder / "d_class").mkdir()
    with pytest.raises(VideoCoopError, match=r"empty class folder.*d_class"):
        FeatureDataset(folder)
    (tmp_path / "nothing" / "a").mkdir(parents=True)
    with pytest.raises(VideoCoopError, match="no feature files"):
        FeatureDataset(tmp_path / "nothing")
    with pytest.raises(VideoCoopError, match="does not exist"):
        FeatureDataset(tmp_path / "missing")


def test_feature_info_round_trip_and_mismatch(tmp_path):
    assert read_feature_info(tmp_path) is None
    info = {"clip_model": "ViT-B-32", "weights": "random:0", "num_frames": 8, "dim": 512, "extra": 1}
    write_feature_info(tmp_path, info)
    assert read_feature_info(tmp_path) == info
    check_feature_info(info, "ViT-B-32", "random:0", 512)
    with pytest.raises(VideoCoopError, match=r"clip_model: 'ViT-B-32' in .*'ViT-B-16' chosen"):
        check_feature_info(info, "ViT-B-16", "random:0", 512)
    with pytest.raises(VideoCoopError, match=r"weights: 'random:0' in .*'openai' chosen"):
        check_feature_info(info, "ViT-B-32", "openai", 512)
    with pytest.raises(VideoCoopError, match="missing dim"):
        write_feature_info(tmp_path, {"clip_model": "x", "weights": "y", "num_frames": 1})
    (tmp_path / "features.json").write_text(json.dumps([1, 2]))
    with pytest.raises(VideoCoopError, match="JSON object"):
        read_feature_info(tmp_path)


def test_uncached_dataset_reads_the_same(folder):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        a, b = FeatureDataset(folder), FeatureDataset(folder, cache=False)
    for i in range(len(a)):
        assert torch.equal(a[i].features, b[i].features)


@pytest.mark.parametrize("content", [np.arange(3 * D, dtype=np.float32).reshape(3, D),
                                     {"features": np.ones((2, D), dtype=np.float16)}])
def test_pt_files_may_hold_numpy_arrays(tmp_path, content):
    # torch.save of a numpy array pickles numpy's reconstructor: allowed, still under weights_only
    _write(tmp_path / "root", "a_class", "v", torch.zeros(1, D))
    torch.save(content, tmp_path / "root" / "a_class" / "v.pt")
    x = FeatureDataset(tmp_path / "root", dim=D)[0].features
    expected = content["features"] if isinstance(content, dict) else content
    assert x.dtype == torch.float32 and torch.equal(x, torch.from_numpy(expected).float())


def test_hidden_files_are_not_features(folder):
    (folder / "a_class" / "._v3.pt").write_bytes(b"\x00\x05\x16\x07 macOS resource fork")
    assert len(FeatureDataset(folder)) == 4


def test_classnames_txt_lines_are_unique(folder):
    (folder / "classnames.txt").write_text("c_class\na_class\nb_class\na_class\n")
    with pytest.raises(VideoCoopError, match=r"classnames.txt lists classes more than once: \['a_class'\]"):
        FeatureDataset(folder)


def test_manifest_row_without_label_is_named(folder):
    manifest = folder / "list.csv"
    manifest.write_text("path,label\nb_class/v1.pt,b_class\nc_class/v4.pt, \n")
    with pytest.raises(VideoCoopError, match=r"list.csv, line 3: needs both a path and a label"):
        FeatureDataset(folder, manifest=manifest)
    manifest.write_text("path,label\nb_class/v1.pt\n")  # a short row: csv gives None
    with pytest.raises(VideoCoopError, match=r"list.csv, line 2: needs both a path and a label"):
        FeatureDataset(folder, manifest=manifest)
