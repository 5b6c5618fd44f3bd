"""What a feature folder and a video tree hold: file names and suffixes, one definition each."""
from __future__ import annotations

import os

#: Per-video feature files a feature folder may hold.
FEATURE_SUFFIXES = (".pt", ".npy")
#: Which CLIP made a folder's features (``videocoop.data.features.read_feature_info``).
INFO_FILE = "features.json"
#: The class order, one name per line.
CLASSNAMES_FILE = "classnames.txt"
#: File suffixes taken for videos when a folder is scanned (case-insensitive): the extractor
#: takes these, and a feature folder holding them says "extract first".
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp", ".ts",
                  ".ogv")


def is_video_file(path: str | os.PathLike) -> bool:
    """A visible file whose suffix is one of :data:`VIDEO_SUFFIXES`."""
    name = os.path.basename(path)
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in VIDEO_SUFFIXES


__all__ = ["CLASSNAMES_FILE", "FEATURE_SUFFIXES", "INFO_FILE", "VIDEO_SUFFIXES", "is_video_file"]
