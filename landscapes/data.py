"""Labelled text data: moved to :mod:`landscapes.transformer.data`; this path keeps old imports working."""

from landscapes.transformer.data import (
    TextData,
    load_reviews,
    load_text_file,
    train_test_split,
)

__all__ = ["TextData", "load_reviews", "load_text_file", "train_test_split"]
