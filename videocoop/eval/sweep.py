"""A results table the way papers report one: shots × seeds as ordinary runs, mean ± std.

``run_sweep`` trains one run per (shots, seed) under ``ROOT/shots{K}_seed{S}`` with
:func:`~videocoop.train.fit`, each an ordinary run folder (config, metrics, summary,
checkpoints, shots.json). The seed of a run is its training seed and, unless the
training config fixes ``split_seed``, its split seed too (CoOp's convention). A finished
run (``summary.json``) is skipped, a stopped one resumed, so rerunning the command after a
kill finishes the grid. The zero-shot row (:mod:`videocoop.eval.zeroshot`) comes first.

Each row averages the runs' own ``summary.json``: the final epoch's validation top-1
(CoOp's protocol: the model after the last epoch, never one picked on the test videos),
or base, novel and HM under base-to-novel. The spread is the standard deviation over
seeds with ``ddof=0``, as CoOp's ``parse_test_res.py`` computes it; HM is the harmonic
mean of the mean base and mean novel accuracies, as CoCoOp's tables give it.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from numbers import Real
from pathlib import Path

from ..data.protocols import apply_protocols, harmonic_mean, split_seed_of
from ..train.config import EXECUTION_KEYS, TrainConfig
from ..train.record import describe_protocol
from ..train.rundir import read_summary, run_state, same_setting
from ..utils.config import config_from_dict
from ..utils.errors import VideoCoopError
from ..utils.files import write_json, write_text
from ..utils.readers import read_json_object
from .zeroshot import DEFAULT_TEMPLATES, RESULT_FILE, config_from_train, zero_shot

log = logging.getLogger(__name__)

SWEEP_FILE = "sweep.json"
ZERO_SHOT_DIR = "zeroshot"
# Settings that vary per run of a sweep, or are actions: not part of what the runs share.
PER_RUN_KEYS = ("shots", "seed", "output_dir", "resume", "eval_only", "overwrite")
SWEEP_FIELDS = {"settings": dict, "shots": list[int], "seeds": list[int]}  # the types of sweep.json's keys
#: The numbers of the zero-shot row's result (zeroshot.json) that the table reads.
ZERO_SHOT_FIELDS = {"top1": Real, "top5": Real, "base_top1": Real, "novel_top1": Real, "hm": Real}


@dataclass
class SweepConfig:
    """A grid of training runs and the zero-shot row: one field per ``videocoop sweep`` flag."""

    train: TrainConfig  # every other training setting, shared by the runs (its shots and seed are ignored)
    shots: list[int] = field(default_factory=lambda: [2, 4, 8, 16])  # ViFi-CLIP's and X-CLIP's video few-shot settings
    seeds: list[int] = field(default_factory=lambda: [1, 2, 3])  # CoOp's three seeds; each run's seed and split seed
    output_dir: str = "output/sweep"  # ROOT: one folder per run, results.csv/.md/.png
    zero_shot: bool = True  # the zero-shot row first (hand-written templates, no training)
    templates: list[str] = field(default_factory=lambda: list(DEFAULT_TEMPLATES))  # of the zero-shot row
    templates_file: str | None = None  # of the zero-shot row, one per line (wins over templates)

    @classmethod
    def from_dict(cls, d: Mapping) -> SweepConfig:
        """Build from a dict (``train`` a :class:`TrainConfig` or a dict of its keys), rejecting
        unknown keys (naming the closest and the valid ones)."""
        d = dict(d)
        if isinstance(d.get("train"), Mapping):
            d["train"] = TrainConfig.from_dict(d["train"])
        return config_from_dict(cls, d, what="sweep config")

    def check(self) -> None:
        """Raises:
            VideoCoopError: naming the bad value.
        """
        for key, values in (("shots", self.shots), ("seeds", self.seeds)):
            if not values:
                raise VideoCoopError(f"--{key} lists no values")
            repeated = sorted({v for v in values if values.count(v) > 1})
            if repeated:
                raise VideoCoopError(f"--{key} lists {repeated} more than once")
        bad = [k for k in self.shots if k < 1]
        if bad:
            raise VideoCoopError(f"--shots must be >= 1, got {bad}")
        if not self.train.val_feature_dir:
            raise VideoCoopError("a sweep reports validation accuracy: pass --val-feature-dir DIR")
        actions = [k for k in ("resume", "eval_only", "overwrite") if getattr(self.train, k)]
        if actions:
            raise VideoCoopError(f"a sweep resumes stopped runs and skips finished ones by itself: drop "
                                 f"{', '.join('--' + a.replace('_', '-') for a in actions)}")
        self.train.check()


@dataclass
class SweepResult:
    """What a sweep did and found."""

    rows: list[dict]  # the table (table_rows), zero-shot first
    trained: list[str] = field(default_factory=list)  # runs trained (or resumed) by this call
    skipped: list[str] = field(default_factory=list)  # finished runs (and a finished zero-shot row) left as they were
    failed: list[str] = field(default_factory=list)  # runs whose training diverged: left out of the table


def run_name(shots: int, seed: int) -> str:
    return f"shots{shots}_seed{seed}"


def run_config(cfg: SweepConfig, shots: int, seed: int) -> TrainConfig:
    """The training config of one run of the grid."""
    out = Path(cfg.output_dir) / run_name(shots, seed)
    return dataclasses.replace(cfg.train, shots=shots, seed=seed, output_dir=str(out))


def _shared_settings(cfg: SweepConfig) -> dict:
    settings = {k: v for k, v in cfg.train.to_dict().items() if k not in EXECUTION_KEYS and k not in PER_RUN_KEYS}
    settings["zero_shot_templates"] = cfg.templates if not cfg.templates_file else f"file:{cfg.templates_file}"
    return settings


def _check_root(cfg: SweepConfig, root: Path) -> None:
    """A ROOT holding a sweep with other shared settings would average runs that are not
    comparable: refused, naming the differences. Other shots and seeds are welcome."""
    path = root / SWEEP_FILE
    new = _shared_settings(cfg)
    if path.is_file():
        old = read_json_object(path, "choose another --output-dir", fields=SWEEP_FIELDS, required=("settings",))["settings"]
        diff = [k for k in sorted(set(old) | set(new)) if not same_setting(k, old.get(k), new.get(k))]
        if diff:
            detail = "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in diff)
            raise VideoCoopError(f"{root} holds a sweep with other settings ({detail}); its runs would not be "
                                 f"comparable with these: choose another --output-dir")
    root.mkdir(parents=True, exist_ok=True)
    write_json(path, {"settings": new, "shots": cfg.shots, "seeds": cfg.seeds})


def _check_shots(cfg: SweepConfig) -> list[str]:
    """Every (base) class must have the largest number of shots: found before the first run,
    not after the small settings have trained. Returns the training split's class list."""
    from ..data.packed import open_feature_dataset

    train_set = open_feature_dataset(cfg.train.feature_dir)
    apply_protocols(dataclasses.replace(cfg.train, shots=max(cfg.shots), split_seed=0), train_set)
    return list(train_set.classnames)


def run_sweep(cfg: SweepConfig) -> SweepResult:
    """Run the grid (skipping finished runs, resuming stopped ones) and write
    ``results.csv``, ``results.md`` and ``results.png`` into ``output_dir``.

    A run whose training diverges is logged and left out of its row (the row says how many
    runs it averages); the others go on.

    Returns:
        The table's rows (:func:`table_rows`) and which runs were trained, skipped or failed.

    Raises:
        VideoCoopError: bad settings (before any run), or a ROOT holding another sweep.
    """
    from ..train.engine import TrainingDiverged
    from ..train.trainer import fit

    cfg.check()
    root = Path(cfg.output_dir)
    classnames = _check_shots(cfg)
    _check_root(cfg, root)
    grid = [(k, s) for k in sorted(cfg.shots) for s in cfg.seeds]
    total = len(grid) + bool(cfg.zero_shot)
    done = 0
    result = SweepResult([])
    if cfg.zero_shot:
        done += 1
        out = root / ZERO_SHOT_DIR
        if (out / RESULT_FILE).is_file():
            log.info(f"[{done}/{total}] {ZERO_SHOT_DIR}: finished ({RESULT_FILE}), skipped")
            result.skipped.append(ZERO_SHOT_DIR)
        else:
            log.info(f"[{done}/{total}] {ZERO_SHOT_DIR}: scoring {cfg.train.val_feature_dir} with "
                     f"{'the templates of ' + cfg.templates_file if cfg.templates_file else cfg.templates}")
            zero_shot(config_from_train(cfg.train, output_dir=str(out), templates=list(cfg.templates),
                                        templates_file=cfg.templates_file), classnames=classnames)
            result.trained.append(ZERO_SHOT_DIR)
    for shots, seed in grid:
        done += 1
        run = run_config(cfg, shots, seed)
        name, state = run_name(shots, seed), run_state(Path(run.output_dir))
        split = f"split seed {split_seed_of(run)}"
        if state == "finished":
            log.info(f"[{done}/{total}] {name}: finished (summary.json), skipped")
            result.skipped.append(name)
            continue
        if state == "stopped":
            log.info(f"[{done}/{total}] {name}: resuming the stopped run ({shots} shots, seed {seed}, {split})")
            run = dataclasses.replace(run, resume=True)
        elif state == "started":
            log.info(f"[{done}/{total}] {name}: it stopped before its first epoch ended; starting it again")
            run = dataclasses.replace(run, overwrite=True)
        else:
            log.info(f"[{done}/{total}] {name}: training ({shots} shots, seed {seed}, {split})")
        try:
            fit(run)
            result.trained.append(name)
        except TrainingDiverged as e:
            log.error(f"{name}: training diverged ({e}); left out of the table")
            result.failed.append(name)
    found = collect(cfg)
    result.rows = table_rows(found, base_to_novel=bool(cfg.train.base_classes))
    record = sweep_protocol(cfg, found)
    write_results(root, result.rows, base_to_novel=bool(cfg.train.base_classes), protocol=record)
    for line in markdown_table(result.rows, bool(cfg.train.base_classes)).splitlines() + record:
        log.info(line)
    log.info(f"wrote {root / 'results.csv'}, results.md, results.png"
             + (f"; {len(result.failed)} run(s) diverged: {', '.join(result.failed)}" if result.failed else ""))
    return result


def collect(cfg: SweepConfig) -> dict:
    """The finished runs' summaries by shots (0: the zero-shot result), in grid order."""
    root = Path(cfg.output_dir)
    found: dict[int, list[dict]] = {}
    if cfg.zero_shot and (root / ZERO_SHOT_DIR / RESULT_FILE).is_file():
        found[0] = [read_json_object(root / ZERO_SHOT_DIR / RESULT_FILE, "run the sweep again", fields=ZERO_SHOT_FIELDS,
                                     required=("top1", "top5"))]
    for shots in sorted(cfg.shots):
        for seed in cfg.seeds:
            path = root / run_name(shots, seed) / "summary.json"
            if path.is_file():
                found.setdefault(shots, []).append(read_summary(path))
    return found


def sweep_protocol(cfg: SweepConfig, found: dict) -> list[str]:
    """The protocol under the table: the runs' own record (``summary.json``'s ``protocol``: model selection,
    frames and views, prompt, classes), the grid's shots and seeds, the zero-shot templates, how HM is taken."""
    runs = [s for shots, summaries in sorted(found.items()) if shots for s in summaries]
    record = next((s["protocol"] for s in runs if s.get("protocol")), None)
    lines = describe_protocol(record) if record else ["protocol: the runs' summaries record none (trained before "
                                                      "videocoop recorded it)"]
    split = "the run's seed" if cfg.train.split_seed is None else f"split seed {cfg.train.split_seed}"
    lines.append(f"shots: {', '.join(map(str, sorted(cfg.shots)))} per class, drawn with {split}; seeds "
                 f"{', '.join(map(str, cfg.seeds))}")
    if cfg.zero_shot:
        templates = f"the templates of {cfg.templates_file}" if cfg.templates_file else cfg.templates
        lines.append(f"zero-shot row: frozen CLIP, templates {templates}")
    if cfg.train.base_classes:
        lines.append("HM: the harmonic mean of the mean base and the mean novel accuracy (CoCoOp), not the mean of "
                     "the runs' own HMs; ± the std of the runs' HMs")
    return lines


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard deviation (``ddof=0``, as CoOp's parse_test_res.py)."""
    m = sum(values) / len(values)
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / len(values))


def table_rows(found: dict, base_to_novel: bool = False) -> list[dict]:
    """One row per setting (zero-shot first): ``setting``, ``shots``, ``runs`` and the
    mean and std of each reported number over the runs.

    Few-shot: ``top1`` and ``top5`` (the final epoch's validation top-1/top-5; the
    zero-shot row's own). Base-to-novel: ``base``, ``novel`` (top-1 each), ``hm`` (the
    harmonic mean of the two means, as CoCoOp's tables) and ``hm_std`` (the spread of
    the runs' own HMs).
    """
    rows = []
    for shots in sorted(found):
        summaries = found[shots]
        row = {"setting": "zero-shot" if shots == 0 else f"{shots} shots", "shots": shots, "runs": len(summaries)}
        if base_to_novel:
            for key, name in (("base", "base_top1"), ("novel", "novel_top1")):
                row[f"{key}_mean"], row[f"{key}_std"] = mean_std([s[name] for s in summaries])
            row["hm"] = harmonic_mean(row["base_mean"], row["novel_mean"])
            row["hm_std"] = mean_std([s["hm"] for s in summaries])[1]
        else:
            for key, name in (("top1", "top1" if shots == 0 else "final_val_top1"),
                              ("top5", "top5" if shots == 0 else "final_val_top5")):
                row[f"{key}_mean"], row[f"{key}_std"] = mean_std([s[name] for s in summaries])
        rows.append(row)
    return rows


def _columns(base_to_novel: bool) -> list[str]:
    numbers = ["base_mean", "base_std", "novel_mean", "novel_std", "hm", "hm_std"] if base_to_novel \
        else ["top1_mean", "top1_std", "top5_mean", "top5_std"]
    return ["setting", "shots", "runs", *numbers]


def markdown_table(rows: Sequence[dict], base_to_novel: bool = False) -> str:
    """The table as markdown: mean ± std (percent) and the number of runs per row."""
    def cell(row, key):
        mean = row[f"{key}_mean"] if key != "hm" else row["hm"]
        std = row[f"{key}_std"]
        return f"{mean:.2f}" if row["shots"] == 0 else f"{mean:.2f} ± {std:.2f}"

    keys = ("base", "novel", "hm") if base_to_novel else ("top1", "top5")
    heads = ("base top-1 (%)", "novel top-1 (%)", "HM (%)") if base_to_novel else ("top-1 (%)", "top-5 (%)")
    lines = ["| setting | runs | " + " | ".join(heads) + " |", "|---|---|" + "---|" * len(heads)]
    lines += [f"| {r['setting']} | {r['runs']} | " + " | ".join(cell(r, k) for k in keys) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_results(root: Path, rows: Sequence[dict], base_to_novel: bool = False,
                  protocol: Sequence[str] = ()) -> None:
    """``results.csv`` (full precision), ``results.md`` (the table, then the ``protocol`` lines) and
    ``results.png``, atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=_columns(base_to_novel), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(root / "results.csv", buffer.getvalue())
    what = ("base-to-novel: base videos among base classes, novel videos among novel classes (top-1), HM = "
            "2·base·novel/(base + novel) of the means (CoCoOp), ± the std of the runs' own HMs") if base_to_novel \
        else "validation top-1/top-5 of the model after the last epoch"
    note = (f"\n{what}; mean ± std over seeds (ddof=0, as CoOp's parse_test_res.py); runs: how many runs each row "
            f"averages. Each run's own numbers are in ROOT/shots<K>_seed<S>/summary.json.\n")
    record = "".join(f"- {line}\n" for line in protocol)
    write_text(root / "results.md", markdown_table(rows, base_to_novel) + note + ("\nProtocol:\n\n" + record if record
                                                                                 else ""))
    plot_results(rows, root / "results.png", base_to_novel)


def plot_results(rows: Sequence[dict], path: Path, base_to_novel: bool = False) -> Path:
    """Accuracy against shots: the mean with error bars of the std over seeds; the zero-shot
    row as a dashed line."""
    from ..train.plots import _figure, _save

    fig = _figure(6.4, 4.2)
    ax = fig.subplots()
    trained = [r for r in rows if r["shots"] > 0]
    zero = next((r for r in rows if r["shots"] == 0), None)
    series = (("base", "base", "tab:blue"), ("novel", "novel", "tab:orange"), ("hm", "HM", "tab:green")) \
        if base_to_novel else (("top1", "top-1", "tab:blue"),)
    for key, label, colour in series:
        if trained:
            x = [r["shots"] for r in trained]
            y = [r[key] if key == "hm" else r[f"{key}_mean"] for r in trained]
            err = [r[f"{key}_std"] for r in trained]
            ax.errorbar(x, y, yerr=err, fmt="-o", ms=4, capsize=3, color=colour, label=f"{label} (mean ± std)")
        if zero is not None:
            ax.axhline(zero[key] if key == "hm" else zero[f"{key}_mean"], ls="--", lw=1, color=colour,
                       label=f"{label}, zero-shot")
    if trained:
        ax.set_xscale("log", base=2)
        ax.set_xticks([r["shots"] for r in trained], [str(r["shots"]) for r in trained])
    ax.set_xlabel("training videos per class (shots)")
    ax.set_ylabel("validation top-1 (%)")
    ax.set_title("base-to-novel" if base_to_novel else "few-shot")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


__all__ = ["SWEEP_FILE", "SweepConfig", "SweepResult", "collect", "markdown_table", "mean_std", "plot_results", "run_config",
           "run_name", "run_sweep", "sweep_protocol", "table_rows", "write_results"]
