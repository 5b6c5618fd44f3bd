"""The ``path,label`` CSV: a list of videos or feature files with their classes, instead of
class folders. This module reads and checks it; each caller resolves the paths its own way
(``FeatureDataset(manifest=...)`` and ``pack``: relative to the feature root, else the CSV's
folder; ``videocoop extract --manifest``: relative to SRC, else the CSV's folder).
"""
from __future__ import annotations

import csv
import io
import os

from ..utils.errors import InputError
from ..utils.readers import read_text

COLUMNS = ("path", "label")
FIX = "the first line reads path,label and each row names one file and its class (quote a name holding a comma)"


def read_manifest(manifest: str | os.PathLike) -> list[dict[str, str]]:
    """The rows of a ``path,label`` CSV (features or videos), header checked; UTF-8 with or
    without a byte-order mark (a spreadsheet's "CSV UTF-8"); names and values are read without
    the spaces around them, other columns are kept and blank lines skipped.

    Raises:
        InputError: an unreadable file or another encoding, no ``path,label`` header, no
            rows, or a row without a path or a label or with more fields than the header
            (the message names its line).
    """
    reader = csv.reader(io.StringIO(read_text(manifest), newline=""))
    try:
        lines = list(reader)
    except csv.Error as e:
        raise InputError(manifest, f"not a CSV file ({e})", at=f"line {reader.line_num}", fix=FIX) from e
    header = [h.strip() for h in lines[0]] if lines else []
    if not set(COLUMNS) <= set(header):
        raise InputError(manifest, f"its header is {','.join(header) or 'empty'}; expected the columns path,label",
                         at="line 1", fix=FIX)
    rows = []
    for n, fields in enumerate(lines[1:], start=2):
        if not any(f.strip() for f in fields):
            continue  # a blank line (a spreadsheet's trailing one)
        if len(fields) > len(header):
            raise InputError(manifest, f"{len(fields)} fields where the header names {len(header)}: {fields}",
                             at=f"line {n}", fix=FIX)
        row = {h: (fields[i].strip() if i < len(fields) else "") for i, h in enumerate(header)}
        if not row["path"] or not row["label"]:
            raise InputError(manifest, f"needs both a path and a label, found {fields}", at=f"line {n}", fix=FIX)
        rows.append(row)
    if not rows:
        raise InputError(manifest, "lists no files (a header and no rows)", fix=FIX)
    return rows


__all__ = ["COLUMNS", "read_manifest"]
