"""Real Hugging Face models as problems: loading, Jacobians, text data, PEFT adapter files."""

from landscapes.transformer import encoder
from landscapes.transformer.encoder import *  # noqa: F403  (the package's public names are the module's)

__all__ = [*encoder.__all__]
