"""Print the foreign zoo's table (family x audit) and the counts the suite is judged by: false FAILs
on clean models, ERRORs, planted faults caught by the audit that names them.

Run from the repository root: ``python docs/studies/zoo_table.py`` (seconds on two CPU cores; the tiny
random-weight CLIP); ``--markdown`` prints the table of docs/foreign_models.md. ``python -m checks --selftest`` prints the same table after its own. The
output of a run is kept beside this script: ``zoo_before.txt`` (the audits before the contract,
issue 19), ``zoo_after.txt`` and ``zoo_issue20.txt`` (with issue 20's audits); ``zoo_before_23.txt`` (the families past one prompt
per class on the audits before issue 23, run with them added to the families) and ``zoo_after_23.txt``.
"""
import sys
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]  # docs/studies/ -> the repository root
sys.path[:0] = [str(ROOT)]
warnings.simplefilter("ignore")

from checks.faults import tiny_clip, NAMES  # noqa: E402
from checks.zoo import format_zoo, run_zoo, summary  # noqa: E402

try:
    from checks.zoo import format_markdown  # noqa: E402
except ImportError:  # the audits before the contract (zoo_before.txt) had no markdown table
    format_markdown = None

if __name__ == "__main__":
    torch.set_num_threads(1)
    start = time.perf_counter()
    runs = run_zoo(*tiny_clip(), NAMES)
    print(format_markdown(runs) if "--markdown" in sys.argv else format_zoo(runs))
    counts = summary(runs)
    print(f"{counts['families']} families: {counts['false_fail']} false FAIL, {counts['error']} ERROR, "
          f"{counts['caught']} of {counts['faults']} planted faults caught ({time.perf_counter() - start:.1f} s, "
          f"torch {torch.__version__})")
