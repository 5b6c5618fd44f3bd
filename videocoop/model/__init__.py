"""The model: learned prompts, the frozen CLIP text path, the video head, logits.

- :mod:`.prompt_learner`: ``PromptLearner`` (the context vectors and the CoOp buffers).
- :mod:`.prompts_file`: the custom prompts file that says how prompts start.
- :mod:`.text_encoder`: ``TextEncoder`` (CLIP's text transformer over prompt embeddings).
- :mod:`.shared_prefix`: the text path that encodes the shared context once.
- :mod:`.video_clip`: ``VideoFeatureCLIP`` (temporal aggregation and cosine logits).
"""
from .prompt_learner import POSITIONS, PromptLearner, class_words, eot_positions
from .prompts_file import PromptsFile
from .shared_prefix import SharedLayout
from .text_encoder import POOLS, SHARED_PREFIX_MODES, TextEncoder
from .video_clip import TEMPORAL_AGGS, TemporalTransformer, VideoFeatureCLIP, masked_mean

__all__ = ["POOLS", "POSITIONS", "SHARED_PREFIX_MODES", "TEMPORAL_AGGS", "PromptLearner", "PromptsFile", "SharedLayout",
           "TemporalTransformer", "TextEncoder", "VideoFeatureCLIP", "class_words", "eot_positions", "masked_mean"]
