"""Video files: decoding and frame sampling, CLIP's preprocessing on tensors, the extractor
(videos to a feature folder), synthetic videos.

- :mod:`.decode`: ``read_frames`` (PyAV, seeking to the kept frames), ``Sampling``.
- :mod:`.preprocess`: ``Preprocess``, open_clip's inference transform on uint8 tensors.
- :mod:`.extract`: ``extract`` and the ``Extractor`` (``videocoop extract``).
- :mod:`.synthetic`: videos with known content (``videocoop synth-videos``).
"""
from .decode import Frames, Sampling, VideoDecodeError, decoder_info, read_frames
from .extract import ExtractConfig, Extractor, extract, find_videos
from .preprocess import Preprocess
from .synthetic import synthesize_videos

__all__ = ["ExtractConfig", "Extractor", "Frames", "Preprocess", "Sampling", "VideoDecodeError", "decoder_info",
           "extract", "find_videos", "read_frames", "synthesize_videos"]
