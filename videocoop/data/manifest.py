"""The path,label CSV that lists videos or feature files instead of class folders."""
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
