"""One module per failure mode; importing this package registers them in report order."""
from . import (  # noqa: F401  (order = report order)
    buffer_device_sync,
    index_device_consistency,
    eot_collapse,
    dataset_unpacking,
    text_encoder_parity,
    causal_mask,
    batch_independence,
    gradient_flow,
    prompt_tokenization,
    host_sync,
    checkpoint_roundtrip,
    feature_model_match,
    extraction_parity,
)
