"""videocoop: CoOp prompt learning for video classification on pre-extracted CLIP features."""
from .errors import VideoCoopError

__version__ = "0.1.0"
__all__ = ["VideoCoopError", "__version__"]
