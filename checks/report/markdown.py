"""The verification report in markdown, shaped like the seed report, in English or Korean."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..core import CheckResult, Status
from . import ko

#: The device and text audits a "safe to train" needs to have run (PASS or WARN).
CORE_AUDITS = ("buffer-device-sync", "index-device-consistency", "text-encoder-parity", "causal-mask")

ICON = {Status.PASS: "✅ PASS", Status.WARN: "⚠️ WARN", Status.FAIL: "❌ FAIL", Status.ERROR: "💥 ERROR",
        Status.SKIP: "⏭️ SKIP"}

EN = {
    "title": "Verification Report",
    "intro": "Every status below was measured by running the model, not by reading its code.",
    "target": "Target", "weights": "Weights", "devices": "Devices", "command": "Command", "versions": "Versions",
    "generated": "Generated", "duration": "Duration",
    "summary": "Summary",
    "summary_head": "| # | Audit | Status | Finding |",
    "sections": "Audits in detail",
    "problem": "Problem", "fix": "Fix it verifies", "location": "Location", "status": "Status",
    "evidence": "Measured evidence", "metrics": "Metrics", "remediation": "If it fails",
    "comparison": "Pooling side by side", "heatmap": "Similarity heatmap",
    "trace": "Traced path (as observed in this run)",
    "checklist": "Summary checklist",
    "table_head": "| # | Problem | Fix | Location | Status |",
    "conclusion": "Conclusion",
    "safe": "✅ Safe to train: no audit failed (FAIL/ERROR), and the core device and text audits ran.",
    "unproven": "⏸️ Not shown safe: no audit failed, but {skipped} of {n} audit(s) were skipped and the core "
                "audit(s) {missing} did not run. Give the target what each SKIP asks for and run again.",
    "skipped": "⏭️ {n} audit(s) skipped (see each one's reason).",
    "unsafe": "❌ Do not train yet: {n} audit(s) failed. Follow each one's 'If it fails'.",
    "warned": "⚠️ {n} warning(s): not a correctness problem, but they cost speed or class separation.",
    "train_with": "Train this exact configuration with:",
    "random_note": " (random CLIP weights: the numbers describe this random model, not a trained CLIP)",
    "devices_line": "cpu for every audit; {dev} as the foreign device for buffer-device-sync, "
                    "index-device-consistency and host-sync",
    "no_cuda": " (no CUDA on this machine: the meta device holds no data, so any host read or CPU tensor "
               "in the forward shows)",
    "constructed": "constructed",
    "moved": "moved",
    "forward": "forward",
    "no_trace": "(no device trace: index-device-consistency did not run)",
    "full_report": "The full report, with the evidence of every audit",
}


@dataclass
class RunInfo:
    """What the figures describe: the target, its weights, the devices, the command."""

    target: str
    weights: str  # "<clip name>, <weights id>"
    foreign_device: str  # "cuda" or "meta"
    command: str
    train_command: str | None = None
    versions: str = ""
    generated: str = ""
    duration: float = 0.0
    construction: str | None = None  # "ClassName at file:line"


def _texts(lang: str) -> tuple[dict, dict]:
    return (ko.HEADINGS, ko.AUDITS) if lang == "ko" else (EN, {})


def _code(lines: Sequence[str]) -> list[str]:
    return ["```", *lines, "```"]


def _section(i: int, r: CheckResult, t: dict, audits: dict) -> list[str]:
    title, problem, fix, remediation = audits.get(r.id, (r.title, r.problem, r.fix, r.remediation))
    out = [f"### {i}. {title} (`{r.id}`) {ICON[r.status].split()[0]}", "",
           f"**{t['problem']}:** {problem}", "", f"**{t['fix']}:** {fix}", "",
           f"**{t['location']}:** `{r.location or '-'}`", "",
           f"**{t['status']}:** {ICON[r.status]}: {r.message}", ""]
    if r.evidence:
        out += [f"**{t['evidence']}:**", "", *_code(r.evidence), ""]
    table = r.extra.get("table")
    if table:
        out += [f"**{t['comparison']}:**", "", "| features | mean cos | max cos | min margin | mean margin | effective rank |",
                "|---|---|---|---|---|---|"]
        out += [f"| {name} | {s['mean_cos']:.4f} | {s['max_cos']:.4f} | {s['min_margin']:.2e} | {s['mean_margin']:.4f} "
                f"| {s['effective_rank']:.1f} |" for name, s in table.items()]
        out.append("")
    if r.extra.get("heatmap"):
        out += [f"**{t['heatmap']}:**", "", *_code(r.extra["heatmap"]), ""]
    if r.extra.get("heatmap_png"):
        out += [f"![{t['heatmap']}]({r.extra['heatmap_png']})", ""]
    if r.metrics:
        out += [f"**{t['metrics']}:** " + ", ".join(f"`{k}={_fmt(v)}`" for k, v in r.metrics.items()), ""]
    if r.status != Status.PASS:
        out += [f"**{t['remediation']}:** {remediation}", ""]
    out += ["---", ""]
    return out


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _trace(results: Sequence[CheckResult], info: RunInfo, t: dict) -> list[str]:
    by_id = {r.id: r for r in results}
    idc = by_id.get("index-device-consistency")
    runs = idc.extra.get("runs", {}) if idc else {}
    if not runs:
        return [t["no_trace"], ""]
    lines = []
    if info.construction:
        lines += [f"{info.construction}  [{t['constructed']}, cpu]", "    |"]
    for device, run in runs.items():
        lines += [f"model.to({device})  [{t['moved']}]"]
        lines += [f"    {m}" for m in run["moved"]]
        lines += ["    |", f"{t['forward']} on {device}:"]
        lines += [f"    {line}" for line in run["path"]]
        if run.get("error"):
            lines += [f"    !! {run['error']}"]
        lines += [""]
    return _code(lines) + [""]


def to_markdown(results: Sequence[CheckResult], info: RunInfo, lang: str = "en") -> str:
    """The full report: header, the summary table (status at a glance), a section per audit, the traced
    path, the checklist, the conclusion."""
    t, audits = _texts(lang)
    out = [f"# {t['title']}", "", t["intro"], "",
           f"- **{t['target']}:** {info.target}",
           f"- **{t['weights']}:** {info.weights}" + (t["random_note"] if "random:" in info.weights else ""),
           f"- **{t['devices']}:** " + t["devices_line"].format(dev=info.foreign_device)
           + (t["no_cuda"] if info.foreign_device == "meta" else ""),
           f"- **{t['command']}:** `{info.command}`"]
    if info.versions:
        out.append(f"- **{t['versions']}:** {info.versions}")
    if info.generated:
        out.append(f"- **{t['generated']}:** {info.generated} ({t['duration']} {info.duration:.1f} s)")
    out += ["", f"## {t['summary']}", "", t["summary_head"], "|---|---|---|---|"]
    for i, r in enumerate(results, 1):
        title = audits.get(r.id, (r.title,))[0]
        out.append(f"| {i} | {title} (`{r.id}`) | {ICON[r.status]} | {_short(r.message, 160)} |")
    out += ["", f"## {t['sections']}", ""]
    for i, r in enumerate(results, 1):
        out += _section(i, r, t, audits)
    out += [f"## 🔍 {t['trace']}", "", *_trace(results, info, t)]
    out += [f"## ✅ {t['checklist']}", "", *_checklist(results, audits, t)]
    out += ["", f"## 🎯 {t['conclusion']}", "", *_conclusion(results, t)]
    if info.train_command and not any(r.status.failed for r in results):
        out += ["", t["train_with"], "", "```bash", info.train_command, "```"]
    return "\n".join(out) + "\n"


def to_step_summary(results: Sequence[CheckResult], info: RunInfo, report: str | None = None, lang: str = "en") -> str:
    """The report's summary checklist and conclusion, for a CI run's page (``$GITHUB_STEP_SUMMARY``)."""
    t, audits = _texts(lang)
    out = [f"## {t['title']}: {info.target}", "",
           f"`{info.command}` · {info.weights} · {t['devices']}: cpu + {info.foreign_device}", "",
           *_checklist(results, audits, t), "", *_conclusion(results, t)]
    if report:
        out += ["", f"{t['full_report']}: `{report}`"]
    return "\n".join(out) + "\n\n"


def _checklist(results: Sequence[CheckResult], audits: dict, t: dict) -> list[str]:
    out = [t["table_head"], "|---|---|---|---|---|"]
    for i, r in enumerate(results, 1):
        title, problem, fix, _ = audits.get(r.id, (r.title, r.problem, r.fix, r.remediation))
        out.append(f"| {i} | {title} (`{r.id}`) | {_short(fix)} | `{r.location or '-'}` | {ICON[r.status]} |")
    return out


def _conclusion(results: Sequence[CheckResult], t: dict) -> list[str]:
    failed = [r for r in results if r.status.failed]
    warned = [r for r in results if r.status == Status.WARN]
    ran = {r.id for r in results if r.status in (Status.PASS, Status.WARN)}
    missing = [i for i in CORE_AUDITS if i not in ran]
    skipped = [r for r in results if r.status == Status.SKIP]
    if failed:
        out = [t["unsafe"].format(n=len(failed))]
    elif missing:
        out = [t["unproven"].format(skipped=len(skipped), n=len(results), missing=", ".join(missing))]
    else:
        out = [t["safe"]]
    if skipped and not failed:
        out += ["", t["skipped"].format(n=len(skipped))] + [f"- `{r.id}`: {r.message}" for r in skipped]
    if failed:
        out += [""] + [f"- `{r.id}`: {r.message}" for r in failed]
    if warned:
        out += ["", t["warned"].format(n=len(warned))] + [f"- `{r.id}`: {r.message}" for r in warned]
    return out


def _short(text: str, n: int = 90) -> str:
    text = text.replace("|", "\\|")
    return text if len(text) <= n else text[: n - 1].rsplit(" ", 1)[0] + " …"
