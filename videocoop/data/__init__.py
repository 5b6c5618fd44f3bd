"""Data: feature folders and packed splits, samples and batches, frame sampling, manifests,
class lists, the few-shot and base-to-novel splits, synthetic features.

- :mod:`.layout`: what a feature folder and a video tree hold (file names, suffixes).
- :mod:`.features`: ``FeatureDataset`` over a folder of per-video files, ``features.json``.
- :mod:`.packed`: one array per split (``videocoop pack``).
- :mod:`.samples`: ``VideoSample`` and ``collate_samples``.
- :mod:`.sampling`: which frames a sample takes (segment middles to evaluate, seeded positions to train).
- :mod:`.manifest`: the ``path,label`` CSV (videos or feature files without class folders).
- :mod:`.classlists`: UCF101 and Kinetics-400 class names.
- :mod:`.protocols`: few-shot draws and base-to-novel class splits.
- :mod:`.synthetic`: synthetic features with a planted prompt (``videocoop synth``).
"""
from .classlists import KINETICS400, UCF101
from .features import (
                       FeatureDataset,
                       MissingValidationClassWarning,
                       check_feature_info,
                       load_feature_file,
                       read_feature_info,
                       relabel,
                       write_feature_info,
)
from .layout import CLASSNAMES_FILE, FEATURE_SUFFIXES, INFO_FILE, VIDEO_SUFFIXES, is_video_file
from .manifest import read_manifest
from .packed import PackedFeatureDataset, is_packed, open_feature_dataset, pack
from .samples import VideoSample, collate_samples
from .sampling import frame_indices, frame_offsets, segment_frames
from .synthetic import synthesize

__all__ = ["CLASSNAMES_FILE", "FEATURE_SUFFIXES", "INFO_FILE", "KINETICS400", "UCF101", "VIDEO_SUFFIXES",
           "FeatureDataset", "MissingValidationClassWarning", "PackedFeatureDataset", "VideoSample",
           "check_feature_info", "collate_samples", "frame_indices", "frame_offsets", "is_packed", "is_video_file",
           "load_feature_file", "open_feature_dataset", "pack", "read_feature_info", "read_manifest", "relabel",
           "segment_frames", "synthesize", "write_feature_info"]
