"""Video files: decoding and frame sampling, CLIP's preprocessing on tensors, the extractor
(videos to a feature folder), synthetic videos.

- :mod:`.decode`: ``read_frames`` and ``iter_frames`` (PyAV, seeking to the kept frames, checked), ``Sampling``,
  ``FrameClock`` (frame times, also for frames without timestamps).
- :mod:`.mpeg4`: how many pictures an MPEG-4 Part 2 packet codes (N-VOPs, DivX's packed B-frames).
- :mod:`.preprocess`: ``Preprocess``, open_clip's inference transform on uint8 tensors.
- :mod:`.sources`: ``find_videos``, the video list a folder tree or a manifest describes.
- :mod:`.extractor`: the ``Extractor`` (decode, preprocess, CLIP's image tower, per chunk of videos).
- :mod:`.extract`: ``ExtractConfig`` and ``extract`` (``videocoop extract``: the files, torchrun).
- :mod:`.synthetic`: videos with known content (``videocoop synth-videos``).
"""
from .decode import FrameClock, Frames, Sampling, VideoDecodeError, decoder_info, iter_frames, read_frames
from .extract import ExtractConfig, ExtractSummary, extract
from .extractor import Extracted, Extractor, Failed
from .preprocess import Preprocess
from .sources import VideoEntry, find_videos
from .synthetic import encode_raw_h264, synthesize_videos

__all__ = ["ExtractConfig", "ExtractSummary", "Extracted", "Extractor", "Failed", "FrameClock", "Frames", "Preprocess",
           "Sampling", "VideoDecodeError", "VideoEntry", "decoder_info", "encode_raw_h264", "extract", "find_videos", "iter_frames",
           "read_frames", "synthesize_videos"]
