"""A property-based fuzz of every reader of user input, and of the commands on top of them (issue 22).

Strategies damage valid fixtures the ways users and disks damage files: cut at any byte, a
flipped byte, junk inserted, another text encoding, a byte-order mark, a JSON key dropped or
given another type, another dtype or shape, NaN or inf, a planted pickle. Every reader and
every command must answer with the documented handling (docs/inputs.md): the file read, or an
``InputError`` (exit 2) whose one paragraph names the file; never a traceback, never a file
changed outside the command's outputs, never a pickle loaded (a planted pickle leaves a marker
file when it is unpickled: :func:`test_a_planted_pickle_leaves_its_marker_when_unpickled`).

Budget: the ``fuzz-small`` profile's ``max_examples`` for each reader, a tenth of it (at least
2) for each command, in every run (``make test``); the ``fuzz`` profile's under
``HYPOTHESIS_PROFILE=fuzz`` (``make fuzz``); both in tests/conftest.py, with the times they were
measured at. Derandomized: every run tries the same examples.
"""
import argparse
import codecs
import contextlib
import hashlib
import io
import json
import os
import pickle
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from checks.cli import main as checks_main
from videocoop.cli import ExitCode, add_train_arguments, config_from_args, main
from videocoop.clip import TINY_MODEL
from videocoop.data import FeatureDataset, PackedFeatureDataset, load_feature_file, pack, read_feature_info
from videocoop.data.protocols import read_class_list
from videocoop.data.synthetic import synthesize
from videocoop.eval.predict import run_classes
from videocoop.model import PromptsFile
from videocoop.train import TrainConfig, fit, load_checkpoint
from videocoop.train.checkpoint import check_checkpoint
from videocoop.train.rundir import read_confusion, read_metrics, read_summary
from videocoop.utils.errors import VideoCoopError
from videocoop.utils.readers import read_lines
from videocoop.video.extract import _check_previous_run

#: The examples each reader tries: the `fuzz-small` profile's in every run, the `fuzz` profile's under
#: HYPOTHESIS_PROFILE=fuzz (`make fuzz`; both in tests/conftest.py); each command tries a tenth.
BUDGET = settings.get_profile("fuzz" if os.environ.get("HYPOTHESIS_PROFILE") == "fuzz" else "fuzz-small")
READER_EXAMPLES = BUDGET.max_examples
COMMAND_EXAMPLES = max(2, READER_EXAMPLES // 10)
FUZZ = dict(parent=BUDGET, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                                  HealthCheck.data_too_large])
MARKER = Path(tempfile.gettempdir()) / f"videocoop-fuzz-unpickled-{os.getpid()}"
CAFE = "Café"  # a class name outside ASCII: re-encoding its file changes its bytes


#: What videocoop extract records about a run into its DST (extract.json).
EXTRACT_SETTINGS = {"clip_model": TINY_MODEL, "weights": "random:0", "sampling": {"method": "segment-middle", "num_frames": 2},
                    "preprocess": {"size": 224}, "precision": "fp32", "dtype": "float16", "source_root": "/videos",
                    "manifest": None, "packed": False}
EXTRACT_RECORD = {"format": "videocoop-extract", "version": 1, "settings": EXTRACT_SETTINGS, "config": {"num_frames": 2}}


class Planted:
    """A pickle that leaves :data:`MARKER` behind when anything unpickles it."""

    def __reduce__(self):
        return open, (str(MARKER), "a")


# --------------------------------------------------------------------------- damage


def _save_npy(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


def _save_pt(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def bytes_damage(data: bytes) -> st.SearchStrategy[bytes]:
    """Cut at any byte, one byte flipped, junk inserted, a UTF-8 byte-order mark, nothing left."""
    n = len(data)
    return st.one_of(
        st.integers(0, n - 1).map(lambda i: data[:i]),
        st.tuples(st.integers(0, n - 1), st.integers(1, 255)).map(
            lambda t: data[:t[0]] + bytes([data[t[0]] ^ t[1]]) + data[t[0] + 1:]),
        st.tuples(st.integers(0, n), st.binary(min_size=1, max_size=8)).map(lambda t: data[:t[0]] + t[1] + data[t[0]:]),
        st.just(codecs.BOM_UTF8 + data),
    )


def text_damage(text: str) -> st.SearchStrategy[bytes]:
    """Another encoding (or UTF-8 with a byte-order mark), or the bytes damaged."""
    encodings = ["latin-1", "cp1252", "utf-16", "utf-16-le", "utf-32", "utf-8-sig", "mac-roman"]
    return st.one_of(st.sampled_from(encodings).map(lambda enc: text.encode(enc, errors="replace")),
                     bytes_damage(text.encode("utf-8")))


JSON_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-(2 ** 70), 2 ** 70),
                        st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
                        st.lists(st.integers(-3, 3), max_size=3), st.dictionaries(st.text(max_size=4), st.integers(), max_size=2))


def json_damage(record: dict) -> st.SearchStrategy[bytes]:
    """A key dropped or given another value (of any JSON type, NaN and inf too), another value
    instead of the object, or the file's text damaged."""
    dump = lambda value: json.dumps(value, indent=1).encode()  # noqa: E731
    keys = sorted(record)
    return st.one_of(
        st.sampled_from(keys).map(lambda k: dump({x: v for x, v in record.items() if x != k})),
        st.tuples(st.sampled_from(keys), JSON_VALUES).map(lambda t: dump({**record, t[0]: t[1]})),
        JSON_VALUES.map(dump),
        text_damage(json.dumps(record, indent=1)),
    )


def _with_value(array: np.ndarray, index: int, value: float) -> np.ndarray:
    out = array.astype(np.float32 if array.dtype.kind != "f" else array.dtype).copy()
    out.flat[index % out.size] = value
    return out


DTYPES = ["int8", "uint8", "int64", "float16", "float64", "complex64", "bool", "U3", "S3"]
RESHAPES = {"extra dim": lambda a: a[None], "one dim": lambda a: a.reshape(-1), "transposed": lambda a: a.T,
            "empty": lambda a: a[:0], "scalar": lambda a: a.reshape(-1)[0]}


def array_damage(array: np.ndarray) -> st.SearchStrategy[bytes]:
    """An ``.npy`` with another dtype or shape, NaN or inf at any element, a planted pickle, a
    structured array, or its bytes damaged."""
    return st.one_of(
        st.sampled_from(DTYPES).map(lambda dt: _save_npy(array.astype(dt))),
        st.sampled_from(sorted(RESHAPES)).map(lambda k: _save_npy(RESHAPES[k](array))),
        st.tuples(st.integers(0, array.size - 1), st.sampled_from([np.nan, np.inf, -np.inf])).map(
            lambda t: _save_npy(_with_value(array, *t))),
        st.just(_save_npy(np.array([Planted()], dtype=object))),
        st.just(_save_npy(np.zeros(3, dtype=[("a", "f4"), ("b", "i4")]))),
        bytes_damage(_save_npy(array)),
    )


def _put(obj, keys, value):
    """``obj`` with ``obj[keys[0]][keys[1]]...`` replaced by ``value`` (copies, not in place)."""
    return value if not keys else {**obj, keys[0]: _put(obj[keys[0]], keys[1:], value)}


def tensor_damage(obj, *keys) -> st.SearchStrategy[bytes]:
    """A ``.pt`` whose tensor (``obj`` itself, or ``obj[keys[0]][keys[1]]...``) changes dtype or
    shape or holds NaN or inf, with a planted pickle beside it, or its bytes damaged."""
    tensor = obj
    for k in keys:
        tensor = tensor[k]
    put = lambda t: _put(obj, keys, t)  # noqa: E731
    dtypes = [torch.int8, torch.uint8, torch.int64, torch.float16, torch.float64, torch.complex64, torch.bool]
    shapes = [lambda t: t[None], lambda t: t.reshape(-1), lambda t: t[:0], lambda t: t.reshape(-1)[0], lambda t: t.T]

    def with_value(t):
        i, v = t
        out = tensor.float().clone()
        out.view(-1)[i % out.numel()] = v
        return _save_pt(put(out))

    return st.one_of(
        st.sampled_from(dtypes).map(lambda dt: _save_pt(put(tensor.to(dt)))),
        st.sampled_from(shapes).map(lambda f: _save_pt(put(f(tensor)))),
        st.tuples(st.integers(0, tensor.numel() - 1), st.sampled_from([float("nan"), float("inf")])).map(with_value),
        st.just(_save_pt(put(Planted()))),
        st.just(_save_pt({"features": tensor, "planted": Planted()} if not keys else {**obj, "x": Planted()})),
        st.just(_save_pt(put(tensor.numpy().tolist()))),
        bytes_damage(_save_pt(obj)),
    )


# --------------------------------------------------------------------------- the valid fixtures


@pytest.fixture(scope="module")
def valid(tmp_path_factory):
    """Every kind of input, valid: a feature folder (.pt and .npy, a class outside ASCII),
    a packed split, a finished one-epoch run, a prompts file, templates, a base-class list,
    a manifest and a --target module."""
    root = tmp_path_factory.mktemp("fuzz")
    data = synthesize(root / "data", clip_model=TINY_MODEL, n_classes=3, train_per_class=2, val_per_class=1,
                      num_frames=3, seed=5)
    for split in ("train", "val"):
        folder = root / "data" / split
        names = read_lines(folder / "classnames.txt")
        os.rename(folder / names[0], folder / CAFE)
        (folder / "classnames.txt").write_text("\n".join([CAFE, *names[1:]]) + "\n", encoding="utf-8")
        first = sorted((folder / CAFE).glob("*.pt"))[0]  # one video of each split as .npy
        np.save(first.with_suffix(".npy"), torch.load(first, weights_only=True).numpy())
        first.unlink()
    train = root / "data" / "train"
    pack(train, root / "packed", dtype="float32")
    cwd = os.getcwd()
    os.chdir(root)  # the run's config.json names its folders relative to the root: a copy of the root runs as is
    try:
        fit(TrainConfig(feature_dir="data/train", val_feature_dir="data/val", output_dir="run", epochs=1, n_ctx=2,
                        batch_size=4, progress="none"))
    finally:
        os.chdir(cwd)
    (root / "features").mkdir()
    (root / "features" / "extract.json").write_text(json.dumps(EXTRACT_RECORD, indent=2))
    prompts = json.loads(Path(data["prompts_file"]).read_text())
    (root / "prompts.json").write_text(json.dumps({**prompts, "display_names": {CAFE: "un café"}}), encoding="utf-8")
    (root / "templates.txt").write_text("a video of {}.\n# a comment\nune vidéo de {}.\n", encoding="utf-8")
    (root / "base.txt").write_text(f"{CAFE}\n{read_lines(train / 'classnames.txt')[1]}\n", encoding="utf-8")
    rows = [f"{p.relative_to(train).as_posix()},{p.parent.name}" for p in sorted(train.glob("*/*.*"))]
    (root / "manifest.csv").write_text("path,label\n" + "\n".join(rows) + "\n", encoding="utf-8")
    (root / "fuzz_target.py").write_text("from checks.faults import bare_model_without_classnames\n\n\n"
                                         "def factory():\n    return bare_model_without_classnames()\n")
    return root


def _files(root: Path, outputs=()) -> dict[str, str]:
    """Every file under ``root`` but the command's ``outputs`` (paths relative to ``root``), hashed."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))
            if p.is_file() and not any(p.relative_to(root).as_posix().startswith(o) for o in outputs)}


@contextlib.contextmanager
def scratch(valid, *parts):
    """A private copy of the fixture's ``parts`` (cwd while it lasts), and no marker left over."""
    MARKER.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="fuzz-") as tmp:
        tmp = Path(tmp)
        for part in parts:
            (tmp / part).parent.mkdir(parents=True, exist_ok=True)
            (shutil.copytree if (valid / part).is_dir() else shutil.copy)(valid / part, tmp / part)
        cwd = os.getcwd()
        os.chdir(tmp)
        try:
            yield tmp
        finally:
            os.chdir(cwd)
    assert not MARKER.exists(), "a planted pickle was unpickled"


def read_or_refused(read, damaged: Path, root: Path):
    """``read()`` returns, or raises a VideoCoopError naming ``damaged``; nothing under ``root``
    changes (readers write nothing)."""
    before = _files(root)
    try:
        return read()
    except VideoCoopError as e:
        assert str(damaged) in str(e), str(e)
    finally:
        assert _files(root) == before


def run_command(main, argv, damaged: Path, root: Path, outputs=(), codes=(ExitCode.OK,), valid_refusal=None):
    """``main(argv)``, run in ``root``, exits with one of ``codes``, or 2 naming ``damaged`` (as the
    command line gave it: relative to ``root``) in one paragraph without a traceback, or 2 saying
    ``valid_refusal`` (what the command answers the undamaged input); files under ``root`` outside
    ``outputs`` stay as they were."""
    before = _files(root, outputs)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    err = err.getvalue()
    assert "Traceback" not in err, err
    assert code in (*codes, ExitCode.USAGE), (code, err)
    if code == ExitCode.USAGE:
        assert str(damaged.relative_to(root)) in err or (valid_refusal and valid_refusal in err), err
    assert _files(root, outputs) == before
    return code


def test_a_planted_pickle_leaves_its_marker_when_unpickled():
    """The marker the fuzz asserts absent is what an unpickled planted object leaves: checked here,
    through pickle, torch.load without weights_only and np.load with allow_pickle."""
    loads = (lambda: pickle.loads(pickle.dumps(Planted())),
             lambda: torch.load(io.BytesIO(_save_pt(Planted())), weights_only=False),
             lambda: np.load(io.BytesIO(_save_npy(np.array([Planted()], dtype=object))), allow_pickle=True))
    for load in loads:
        MARKER.unlink(missing_ok=True)
        load()
        assert MARKER.exists()
    MARKER.unlink()


# --------------------------------------------------------------------------- the readers


def _text(valid, name):
    return (valid / name).read_text(encoding="utf-8")


def _train_config(argv):
    """The config of ``videocoop train ARGV``, as the command reads and checks it."""
    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    return config_from_args(parser.parse_args(argv))


def _ckpt(valid):
    return torch.load(valid / "run/checkpoint_last.pt", weights_only=True)


def _checkpoint_damage(valid):
    state = _ckpt(valid)
    return st.one_of(
        tensor_damage(state, "trainable", "prompt_learner.ctx"),
        st.sampled_from(sorted(state)).map(lambda k: _save_pt({x: y for x, y in state.items() if x != k})),
        st.tuples(st.sampled_from(sorted(state)), JSON_VALUES).map(lambda t: _save_pt({**state, t[0]: t[1]})),
        st.sampled_from(["module.", "_orig_mod.", "model."]).map(
            lambda p: _save_pt({**state, "trainable": {p + k: t for k, t in state["trainable"].items()}})),
        st.just(_save_pt({"state_dict": state["trainable"], "epoch": 1})),  # CoOp's (Dassl's) layout
        st.just(_save_pt(state["trainable"])),  # a bare state dict
    )


def _read_checkpoint(root, valid):
    """As --resume reads it: the file, then against the run's classes and model."""
    path, run = root / "run/checkpoint_last.pt", _ckpt(valid)
    check_checkpoint(load_checkpoint(path), path, classnames=run["classnames"], trainable=run["trainable"])


NPY = "data/train/Café/v_ApplyEyeMakeup_train000.npy"  # the fixture's .npy and a .pt, both of class Café
PT = "data/train/Café/v_ApplyEyeMakeup_train001.pt"
READERS = {
    # name: (the file damaged, relative to the fixture; its damage, from the valid fixture; the read; what of
    # the fixture it needs besides)
    "classnames.txt": ("data/train/classnames.txt", lambda v: text_damage(_text(v, "data/train/classnames.txt")),
                       lambda root, v: FeatureDataset(root / "data/train").classnames, ["data/train"]),
    "templates": ("templates.txt", lambda v: text_damage(_text(v, "templates.txt")),
                  lambda root, v: read_lines(root / "templates.txt"), []),
    "base classes": ("base.txt", lambda v: text_damage(_text(v, "base.txt")),
                     lambda root, v: read_class_list(root / "base.txt"), []),
    "manifest": ("manifest.csv", lambda v: text_damage(_text(v, "manifest.csv")),
                 lambda root, v: len(FeatureDataset(root / "data/train", manifest=root / "manifest.csv")), ["data/train"]),
    "features.json": ("data/train/features.json", lambda v: json_damage(json.loads(_text(v, "data/train/features.json"))),
                      lambda root, v: read_feature_info(root / "data/train"), []),
    "prompts file": ("prompts.json", lambda v: json_damage(json.loads(_text(v, "prompts.json"))),
                     lambda root, v: PromptsFile.load(root / "prompts.json").prompt_kwargs(
                         read_lines(v / "data/train/classnames.txt")), []),
    "config.json": ("run/config.json", lambda v: json_damage(json.loads(_text(v, "run/config.json"))),
                    lambda root, v: _train_config(["--config", str(root / "run/config.json")]), ["data/train/features.json",
                                                                                                 "data/val/features.json"]),
    "summary.json": ("run/summary.json", lambda v: json_damage(json.loads(_text(v, "run/summary.json"))),
                     lambda root, v: read_summary(root / "run/summary.json"), []),
    "classes.json": ("run/classes.json", lambda v: json_damage({"base": [CAFE], "novel": ["b", "c"]}),
                     lambda root, v: run_classes(root / "run", [CAFE]), []),
    "metrics.jsonl": ("run/metrics.jsonl", lambda v: st.one_of(
        text_damage(_text(v, "run/metrics.jsonl")),
        json_damage(json.loads(_text(v, "run/metrics.jsonl").splitlines()[-1])).map(  # one row's keys
            lambda b: _text(v, "run/metrics.jsonl").encode() + b.replace(b"\n", b"") + b"\n")),
                      lambda root, v: read_metrics(root / "run/metrics.jsonl"), []),
    "packed.json": ("packed/packed.json", lambda v: json_damage(json.loads(_text(v, "packed/packed.json"))),
                    lambda root, v: len(PackedFeatureDataset(root / "packed")), ["packed"]),
    "packed frames": ("packed/features.npy", lambda v: array_damage(np.load(v / "packed/features.npy")),
                      lambda root, v: len(PackedFeatureDataset(root / "packed")), ["packed"]),
    "packed offsets": ("packed/offsets.npy", lambda v: array_damage(np.load(v / "packed/offsets.npy")),
                       lambda root, v: len(PackedFeatureDataset(root / "packed")), ["packed"]),
    "feature file .npy": (NPY, lambda v: array_damage(np.load(v / NPY)), lambda root, v: load_feature_file(root / NPY, 32),
                          []),
    "feature file .pt": (PT, lambda v: tensor_damage(torch.load(v / PT, weights_only=True)),
                         lambda root, v: load_feature_file(root / PT, 32), []),
    "confusion.npy": ("run/confusion.npy", lambda v: array_damage(np.load(v / "run/confusion.npy")),
                      lambda root, v: read_confusion(root / "run/confusion.npy", 3), []),
    "checkpoint": ("run/checkpoint_last.pt", _checkpoint_damage, _read_checkpoint, []),
    "extract.json": ("features/extract.json", lambda v: json_damage(EXTRACT_RECORD),
                     lambda root, v: _check_previous_run(root / "features", EXTRACT_SETTINGS, overwrite=False), []),
}
PARTS = ["data", "packed", "run", "features", "prompts.json", "templates.txt", "base.txt", "manifest.csv"]


@pytest.mark.parametrize("reader", sorted(READERS))
def test_every_reader_reads_or_names_the_damaged_file(valid, reader):
    name, damage, read, parts = READERS[reader]
    damages = damage(valid)

    @settings(max_examples=READER_EXAMPLES, **FUZZ)
    @given(st.data())
    def fuzz(data):
        payload = data.draw(damages, label="damaged file")
        with scratch(valid, *parts) as root:
            path = root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(payload)
            read_or_refused(lambda: read(root, valid), path, root)

    fuzz()


# --------------------------------------------------------------------------- the commands

TRAIN = ["--n-ctx", "2", "--batch-size", "4", "--epochs", "1", "--progress", "none"]
DATA = ["--feature-dir", "data/train", "--val-feature-dir", "data/val"]
RUN = ["train", *DATA, "--output-dir", "run", *TRAIN]
OK_OR_DIVERGED = (ExitCode.OK, ExitCode.FAILED)  # a damaged value may make the loss diverge: exit 1, documented


def _damage(*readers):
    """(the file, its damaged bytes), the file drawn among those the ``readers`` of READERS damage."""
    return lambda v: st.one_of(*(st.tuples(st.just(READERS[r][0]), READERS[r][1](v)) for r in readers))


COMMANDS = {
    # name: (which file and how it is damaged; argv, run in a copy of the fixture; the command's outputs; the
    # exit codes besides 2 the docs give it)
    "pack": (_damage("features.json", "feature file .npy", "feature file .pt", "classnames.txt"),
             ["pack", "data/train", "out"], ["out"], (ExitCode.OK,)),
    "train": (_damage("classnames.txt", "features.json", "base classes"),
              ["train", *DATA, "--output-dir", "out", "--base-classes", "base.txt", *TRAIN], ["out"], OK_OR_DIVERGED),
    "train --config": (_damage("config.json"), ["train", "--config", "run/config.json", "--output-dir", "out",
                                                "--epochs", "1"], ["out"], OK_OR_DIVERGED),
    "train --resume": (lambda v: st.one_of(_damage("metrics.jsonl", "config.json")(v),
                                           st.tuples(st.just("run/checkpoint_last.pt"), _checkpoint_damage(v))),
                       [*RUN, "--resume"], ["run"], OK_OR_DIVERGED),
    "train --eval-only": (lambda v: st.tuples(st.just("run/checkpoint_best.pt"), _checkpoint_damage(v)),
                          [*RUN, "--eval-only"], ["run/eval.json"], (ExitCode.OK,)),
    "plot": (_damage("metrics.jsonl", "summary.json", "confusion.npy"), ["plot", "run"],
             ["run/curves.png", "run/confusion.png"], (ExitCode.OK,)),
    "predict": (lambda v: st.one_of(_damage("config.json", "classes.json")(v),
                                    st.tuples(st.just("run/checkpoint_best.pt"), _checkpoint_damage(v))),
                ["predict", "--run", "run", "--features", "data/val", "--out", "p.csv"], ["p.csv"], (ExitCode.OK,)),
    "eval --zero-shot": (lambda v: st.one_of(_damage("templates")(v), st.tuples(
        st.just("data/val/features.json"), READERS["features.json"][1](v))),
                         ["eval", "--zero-shot", "--feature-dir", "data/val", "--templates-file", "templates.txt",
                          "--output-dir", "out", "--progress", "none"], ["out"], (ExitCode.OK,)),
    "checks --target": (lambda v: st.tuples(st.just("fuzz_target.py"), text_damage(_text(v, "fuzz_target.py"))),
                        ["--target", "fuzz_target:factory", "--report", "r.md"], ["r.md"], ()),
}
#: What a command answers its undamaged input, when that is a refusal (the target's bare model
#: would need --classnames: the answer that runs no audit, so each example stays cheap).
VALID_REFUSALS = {"checks --target": "bare model without class names"}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_runs_or_names_the_damaged_file(valid, command, monkeypatch):
    damage, argv, outputs, codes = COMMANDS[command]
    damages = damage(valid)
    monkeypatch.setattr(sys, "path", list(sys.path))  # --target puts the cwd on it
    run = checks_main if command.startswith("checks") else main

    @settings(max_examples=COMMAND_EXAMPLES, **FUZZ)
    @given(st.data())
    def fuzz(data):
        name, payload = data.draw(damages, label="damaged file")
        with scratch(valid, *PARTS, "fuzz_target.py") as root:
            sys.modules.pop("fuzz_target", None)
            path = root / name
            path.write_bytes(payload)
            run_command(run, argv, path, root, outputs, codes, VALID_REFUSALS.get(command))

    fuzz()
