"""videocoop: CoOp prompt learning for video classification on pre-extracted CLIP features.

The sub-packages are layers; imports point down only::

    cli -> eval -> train -> video -> data -> model -> clip -> utils

(docs/architecture.md draws it and says where each concern lives.)
"""
from .utils.errors import InputError, VideoCoopError

__version__ = "0.1.0"
__all__ = ["InputError", "VideoCoopError", "__version__"]
