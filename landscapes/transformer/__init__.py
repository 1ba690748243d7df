"""Real Hugging Face models as problems: loading, Jacobians, text data, PEFT adapter files."""

from landscapes.transformer.encoder import (
    DEFAULT_LABEL_WORDS,
    DEFAULT_TARGETS,
    DEFAULT_TEMPLATE,
    LinearizationCheck,
    LinearizedEncoder,
    ModelLoadError,
    Target,
    adapted_logits,
    default_model_path,
    load_encoder,
    review_encoder,
    target_weights,
    transformer_problem,
)

__all__ = [
    "LinearizedEncoder",
    "LinearizationCheck",
    "Target",
    "load_encoder",
    "ModelLoadError",
    "default_model_path",
    "transformer_problem",
    "adapted_logits",
    "review_encoder",
    "target_weights",
    "DEFAULT_TARGETS",
    "DEFAULT_TEMPLATE",
    "DEFAULT_LABEL_WORDS",
]
