"""The names on disk, defined once: what a feature folder and a tree of videos hold.

A feature folder is ``<class>/<video>.pt|.npy`` (:data:`FEATURE_SUFFIXES`) beside
:data:`INFO_FILE` (which CLIP made the features) and, optionally, :data:`CLASSNAMES_FILE`
(the class order); a packed split (:mod:`.packed`) keeps the last two beside its arrays.
A tree of videos holds files with one of :data:`VIDEO_SUFFIXES`. The datasets, ``pack``,
``synth``, the extractor, training and predict all take these names from here, so what
one writes the others find; and a feature folder that holds videos instead is recognised
(the error says to run ``videocoop extract`` first).
"""
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
