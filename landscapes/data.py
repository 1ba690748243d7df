"""Labelled text data: moved to :mod:`landscapes.transformer.data`; this path keeps old imports working."""

from landscapes.transformer.data import (
    REVIEWS_FILE,
    TextData,
    load_reviews,
    load_text_file,
    reviews_path,
    train_test_split,
)

__all__ = ["REVIEWS_FILE", "TextData", "load_reviews", "load_text_file", "reviews_path", "train_test_split"]
