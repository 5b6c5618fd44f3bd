"""The ``path,label`` CSV: a list of videos or feature files with their classes, instead of
class folders. This module reads and checks it; each caller resolves the paths its own way
(``FeatureDataset(manifest=...)`` and ``pack``: relative to the feature root, else the CSV's
folder; ``videocoop extract --manifest``: relative to SRC, else the CSV's folder).
"""
from __future__ import annotations

import csv
import os

from ..utils.errors import VideoCoopError


def read_manifest(manifest: str | os.PathLike) -> list[dict[str, str]]:
    """The rows of a ``path,label`` CSV (features or videos), header checked.

    Raises:
        VideoCoopError: an unreadable file, no ``path,label`` header, or no rows.
    """
    try:
        with open(manifest, newline="") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise VideoCoopError(f"cannot read manifest {manifest}: {e}") from e
    if not rows or not {"path", "label"} <= set(rows[0]):
        raise VideoCoopError(f"manifest {manifest} needs a 'path,label' header and at least one row")
    return rows
