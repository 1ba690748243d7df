r"""Benchmark: the cost of the LoRA-GA init on the MiniLM setting, as a multiple of one LoRA gradient.

Setting: the offline MiniLM, the last layer's W_q and W_v (two 384 x 384 blocks), K = 2, random
head on mean pooling, N review sentences (default 32), float64 unless ``--dtype float32``.

Two units, measured in the same run:

* ``lora_grad_linearized`` -- one gradient of the LoRA objective of the linearized problem
  (``lora_value_and_grad`` at the rank-``r`` init; ``J`` stored), the unit of the package's own
  training loops;
* ``lora_grad_model`` -- one gradient of the real model's loss with respect to the adapter
  factors ``(B, A)`` (forward from the tokens and backward, PEFT-style adapters as forward hooks on
  the two ``nn.Linear``), what a training step on the real model pays.

Init stages, each timed (median of ``--repeats``) and divided by both units:

* ``G_model`` -- the full-weight gradient ``G`` on the real model, all N sentences in one batch;
  ``G_model_batches2`` -- the same gradient the way the reference code computes it, in batches of
  2 sentences (it takes 64 batches of 2; with N <= 128 sentences that is every sentence once, so
  N / 2 batches here);
* ``G_linearized`` -- ``G = J^T g`` on the linearized problem (``J`` already stored);
* ``svd_full`` -- ``torch.linalg.svd`` of both blocks of ``G`` (the exact route);
  ``svd_randomized`` -- ``torch.svd_lowrank`` with ``q = 4r``, ``niter = 4`` (the reference
  code's route); with the relative error of the resulting first step against ``G_[2r]``
  (what the randomized route costs in the first-step identity).

Usage::

    python benchmarks/bench_loraga.py [--n 32] [--ranks 4 8 16] [--repeats 5] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "results", "bench_loraga.json")


def _time(f: Callable[[], Any], repeats: int) -> float:
    f()  # warm-up
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def _model_loss_grad(enc: Any, labels: torch.Tensor, idx: list[int], params: list[torch.Tensor]) -> None:
    """Forward from the tokens through the model on examples ``idx``, CE loss, backward to ``params``."""
    tok = enc.tokenizer([enc.texts[i] for i in idx], padding=True, return_tensors="pt")
    mask = tok["attention_mask"].to(enc.dtype)
    with torch.enable_grad():
        out = enc.model(**tok).last_hidden_state
        pooled = (out * mask[:, :, None]).sum(1) / mask.sum(1, keepdim=True)
        logits = pooled @ enc.head_matrix.T
        loss = torch.nn.functional.cross_entropy(logits, labels[idx])
        torch.autograd.grad(loss, params)


def _svds(G: Any, k: int, **kw: Any) -> list[Any]:
    from landscapes.inits import gradient_svd

    return [gradient_svd(Gj, k, **kw) for Gj in G]


def run(n: int, ranks: list[int], repeats: int, dtype: torch.dtype, seed: int) -> dict[str, Any]:
    from landscapes.inits import full_gradient, init_lora
    from landscapes.lora import lora_value_and_grad
    from landscapes.transformer.data import load_reviews, train_test_split
    from landscapes.transformer.encoder import LinearizedEncoder, load_encoder

    net, tok = load_encoder(None, dtype=dtype)
    train, _ = train_test_split(load_reviews(), n_train=n, seed=seed)
    enc = LinearizedEncoder(net, tok, list(train.texts), K=2, dtype=dtype)
    labels = train.label_tensor()
    problem = enc.problem(labels, lam=0.01)
    all_idx = list(range(n))
    weights = [m.weight for m in enc._modules]
    out: dict[str, Any] = {
        "N": n,
        "dtype": str(dtype).replace("torch.", ""),
        "blocks": [list(b) for b in problem.blocks],
    }

    # G on the real model: all N at once, and in the reference code's batches of 2 (each sentence once).
    for w in weights:
        w.requires_grad_(True)
    try:
        out["G_model"] = _time(lambda: _model_loss_grad(enc, labels, all_idx, weights), repeats)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
        batches = [order[i : i + 2] for i in range(0, min(n, 128), 2)]
        out["G_model_batches2"] = _time(
            lambda: [_model_loss_grad(enc, labels, b, weights) for b in batches], max(1, repeats // 2)
        )
    finally:
        for w in weights:
            w.requires_grad_(False)
    out["G_linearized"] = _time(lambda: full_gradient(problem), repeats)
    G = full_gradient(problem)
    rows = []
    for r in ranks:
        ini = init_lora(problem, "loraga", rank=r, gradient=G)
        pt = ini.point()
        unit_lin = _time(partial(lora_value_and_grad, problem, pt.U, pt.V), repeats)
        # one LoRA gradient on the real model: adapters (B, A) as forward hooks, backward to them
        Bs = [b.detach().clone().requires_grad_(True) for b in ini.B]
        As = [a.detach().clone().requires_grad_(True) for a in ini.A]
        s = ini.scale
        handles = []
        for mod, b, a in zip(enc._modules, Bs, As):

            def hook(
                _m: Any, inp: Any, o: torch.Tensor, a: torch.Tensor = a, b: torch.Tensor = b, s: float = s
            ) -> torch.Tensor:
                return o + s * ((inp[0] @ a.T) @ b.T)

            handles.append(mod.register_forward_hook(hook))
        try:
            unit_model = _time(partial(_model_loss_grad, enc, labels, all_idx, Bs + As), repeats)
        finally:
            for h in handles:
                h.remove()
        svd_full = _time(partial(_svds, G, 2 * r, svd="full"), repeats)
        gen = torch.Generator().manual_seed(1)
        svd_rand = _time(partial(_svds, G, 2 * r, svd="randomized", generator=gen), repeats)
        # accuracy of the randomized route: the first-order step of its init against zeta G_[2r]
        rnd = init_lora(problem, "loraga", rank=r, gradient=G, svd="randomized", seed=1)
        errs = []
        for j, Gj in enumerate(G):
            U, sv, Vh = torch.linalg.svd(Gj, full_matrices=False)
            G2r = (U[:, : 2 * r] * sv[: 2 * r]) @ Vh[: 2 * r]
            c = rnd.details["stable_scale"][j]
            step = rnd.scale**2 * (Gj @ rnd.A[j].T @ rnd.A[j] + rnd.B[j] @ (rnd.B[j].T @ Gj))
            errs.append(
                float((step - rnd.scale**2 * c * c * G2r).norm() / (rnd.scale**2 * c * c * G2r).norm())
            )
        row = {
            "r": r,
            "lora_grad_linearized": unit_lin,
            "lora_grad_model": unit_model,
            "svd_full": svd_full,
            "svd_randomized": svd_rand,
            "svd_speedup_randomized": svd_full / svd_rand,
            "randomized_first_step_rel_error": errs,
        }
        for key in ("G_model", "G_model_batches2", "G_linearized"):
            row[f"{key}_over_lin_grad"] = out[key] / unit_lin
            row[f"{key}_over_model_grad"] = out[key] / unit_model
        for key in ("svd_full", "svd_randomized"):
            row[f"{key}_over_lin_grad"] = row[key] / unit_lin
            row[f"{key}_over_model_grad"] = row[key] / unit_model
        row["init_reference_over_model_grad"] = (out["G_model_batches2"] + svd_rand) / unit_model
        row["init_exact_over_model_grad"] = (out["G_model"] + svd_full) / unit_model
        rows.append(row)
    out["ranks"] = rows
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--ranks", type=int, nargs="+", default=[4, 8, 16])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    dtype = getattr(torch, args.dtype)
    t0 = time.time()
    res = run(args.n, args.ranks, args.repeats, dtype, args.seed)
    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "loadavg": list(os.getloadavg()),
    }
    data = {
        "benchmark": "bench_loraga",
        "started": t0,
        "seconds": time.time() - t0,
        "environment": env,
        "result": res,
    }
    print(
        f"MiniLM W_q, W_v, N = {res['N']}, {res['dtype']}: G on the model {res['G_model'] * 1e3:.0f} ms "
        f"(in batches of 2: {res['G_model_batches2'] * 1e3:.0f} ms); "
        f"from J {res['G_linearized'] * 1e3:.1f} ms"
    )
    cols = ["r", "LoRA grad lin", "LoRA grad model", "SVD full", "SVD rand", "speed-up", "rand. step err"]
    cols += ["init ref / model grad", "init exact / model grad"]
    widths = [3, 14, 16, 10, 10, 9, 15, 22, 24]
    print(" ".join(f"{c:>{w}}" for c, w in zip(cols, widths)))
    for row in res["ranks"]:
        cells = [
            f"{row['r']}",
            f"{row['lora_grad_linearized'] * 1e3:.1f} ms",
            f"{row['lora_grad_model'] * 1e3:.0f} ms",
            f"{row['svd_full'] * 1e3:.1f} ms",
            f"{row['svd_randomized'] * 1e3:.1f} ms",
            f"{row['svd_speedup_randomized']:.1f}x",
            f"{max(row['randomized_first_step_rel_error']):.1e}",
            f"{row['init_reference_over_model_grad']:.1f}",
            f"{row['init_exact_over_model_grad']:.1f}",
        ]
        print(" ".join(f"{c:>{w}}" for c, w in zip(cells, widths)))
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmp = args.out + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(data, fh, indent=1)
    os.replace(tmp, args.out)
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
