r"""Benchmark: Jacobian extraction from a real encoder -- ours vs the floor and two plain baselines.

Model and data: the offline MiniLM (all-MiniLM-L6-v2), targets the last layer's W_q and W_v
(2 x 384 x 384 = 294,912 columns), K = 2, a random head on mean pooling, review sentences drawn
by the seeded stratified split. For each N and dtype, in one run:

* ``floor`` -- one frozen forward pass over the same examples with the same length buckets
  (tokenization included, no autograd): the least any method must spend, since ``J`` needs this
  pass plus ``K`` backward passes through the adapted layer.
* ``floor_padded`` -- the same forward pass, batches of 32 padded to the longest sentence (what
  a padded pipeline pays).
* ``ours`` -- :class:`landscapes.transformer.encoder.LinearizedEncoder` (tokenize, bucket, cache the
  hidden state entering layer 5) plus :meth:`~landscapes.transformer.encoder.LinearizedEncoder.jacobian`
  (probe gradients, ``K`` backward passes per bucket, batched outer products).
* ``loop`` -- a plain per-example autograd loop over the whole model
  (:meth:`~landscapes.transformer.encoder.LinearizedEncoder.reference_jacobian`: each sentence alone, no
  padding, ``K`` backward passes); the time of building the encoder is not counted for it.
* ``vmap_padded`` -- the padded ``vmap(jacrev)`` recipe: a padded forward pass that keeps the
  hidden states, then ``vmap(jacrev)`` of the last layer per example on the padded states.
* ``operator`` -- the operator form: seconds per ``J v`` (jvp) and per ``J^T u`` (vjp) over all N.

``floor`` and ``ours`` alternate ``--repeats`` times in one process and the minimum of each is
kept (the machine's memory system is noisy); the other methods run once after a warm-up. Each
(N, dtype) runs in a fresh subprocess, so the peak resident memory it reports (``ru_maxrss``, and
the increase over the process's own state after loading and warm-up) belongs to that method.
``ours`` is checked against ``loop`` on two sentences (relative difference printed).

Usage::

    python benchmarks/bench_jacobian.py [--ns 32 128 512] [--dtypes float64 float32] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from typing import Any

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "results", "bench_jacobian.json")


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _setup(N: int, dtype: torch.dtype, seed: int) -> tuple[Any, Any, list[str]]:
    from landscapes.transformer.data import load_reviews, train_test_split
    from landscapes.transformer.encoder import load_encoder

    net, tok = load_encoder(dtype=dtype)
    train, _ = train_test_split(load_reviews(), n_train=N, seed=seed)
    return net, tok, list(train.texts)


def _floor(net: Any, tok: Any, texts: list[str], bucket: int, padded: bool) -> float:
    t0 = time.perf_counter()
    if padded:
        enc = tok(texts, padding=True, truncation=True, return_tensors="pt")
        with torch.no_grad():
            for c in range(0, len(texts), bucket):
                net(**{k: v[c : c + bucket] for k, v in enc.items()})
    else:
        lens = [len(x) for x in tok(texts, truncation=True)["input_ids"]]
        order = sorted(range(len(texts)), key=lambda i: (lens[i], i))
        with torch.no_grad():
            for c in range(0, len(texts), bucket):
                enc = tok(
                    [texts[i] for i in order[c : c + bucket]],
                    padding=True,
                    truncation=True,
                    return_tensors="pt",
                )
                net(**enc)
    return time.perf_counter() - t0


def _ours(net: Any, tok: Any, texts: list[str], dtype: torch.dtype, bucket: int) -> tuple[float, Any, Any]:
    from landscapes.transformer.encoder import LinearizedEncoder

    t0 = time.perf_counter()
    lin = LinearizedEncoder(net, tok, texts, dtype=dtype, bucket_size=bucket)
    J = lin.jacobian()
    return time.perf_counter() - t0, lin, J


def _vmap_padded(
    net: Any, tok: Any, texts: list[str], head: torch.Tensor, dtype: torch.dtype, bucket: int
) -> tuple[float, torch.Tensor]:
    """Padded forward keeping hidden states, then vmap(jacrev) of the last layer per example."""
    from torch.func import functional_call, jacrev, vmap

    layer = net.encoder.layer[-1]
    names = ["attention.self.query.weight", "attention.self.value.weight"]
    params = {n: dict(layer.named_parameters())[n] for n in names}

    def f(p: dict[str, torch.Tensor], h: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        add = ((1.0 - m) * torch.finfo(dtype).min)[None, None, None, :]
        out = functional_call(layer, p, (h[None],), {"attention_mask": add})
        out = (out[0] if isinstance(out, tuple) else out)[0]
        pooled = (out * m[:, None]).sum(0) / m.sum()
        return head @ pooled

    jf = vmap(jacrev(f), in_dims=(None, 0, 0))
    t0 = time.perf_counter()
    enc = tok(texts, padding=True, truncation=True, return_tensors="pt")
    rows = []
    for c in range(0, len(texts), bucket):
        e = {k: v[c : c + bucket] for k, v in enc.items()}
        with torch.no_grad():
            h = net(**e, output_hidden_states=True).hidden_states[-2]
        jj = jf(params, h, e["attention_mask"].to(dtype))
        rows.append(torch.cat([jj[n].reshape(h.shape[0], head.shape[0], -1) for n in names], 2))
    J = torch.cat(rows).reshape(len(texts) * head.shape[0], -1)
    return time.perf_counter() - t0, J


def worker(
    N: int, dtype_name: str, methods: list[str], repeats: int, seed: int, bucket: int
) -> dict[str, Any]:
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", torch.get_num_threads())))
    dtype = getattr(torch, dtype_name)
    net, tok, texts = _setup(N, dtype, seed)
    # warm-up: torch.func transforms and the allocator, on a few sentences
    _floor(net, tok, texts[:8], bucket, False)
    _t, lin_w, _ = _ours(net, tok, texts[:8], dtype, bucket)
    lin_w.reference_jacobian([0])
    lin_w.operator().matvec(torch.zeros(lin_w.num_params, dtype=dtype))
    base_rss = _rss_mb()
    rec: dict[str, Any] = {"N": N, "dtype": dtype_name, "rss_after_warmup_mb": base_rss}
    if "ours" in methods:
        floors, ours = [], []
        for _ in range(repeats):
            floors.append(_floor(net, tok, texts, bucket, False))
            t, lin, J = _ours(net, tok, texts, dtype, bucket)
            ours.append(t)
            del J
        rec["floor_seconds"] = min(floors)
        rec["floor_seconds_all"] = floors
        rec["ours_seconds"] = min(ours)
        rec["ours_seconds_all"] = ours
        rec["ours_setup_seconds"] = lin.setup_seconds
        rec["ours_peak_rss_mb"] = _rss_mb()
        rec["J_shape"] = [N * 2, lin.num_params]
        rec["J_gb"] = N * 2 * lin.num_params * torch.finfo(dtype).bits / 8 / 2**30
        rec["mean_tokens"] = sum(lin.lengths) / N
        rec["max_tokens"] = max(lin.lengths)
        # correctness against the per-example loop on two sentences
        J = lin.jacobian()
        R = lin.reference_jacobian([0, N - 1])
        rows = torch.tensor([0, 1, 2 * N - 2, 2 * N - 1])
        rec["ours_vs_loop_rel_diff"] = float((J[rows] - R).norm() / R.norm())
        del J
        # operator form
        op = lin.operator()
        v = torch.randn(lin.num_params, dtype=dtype)
        u = torch.randn(2 * N, dtype=dtype)
        t0 = time.perf_counter()
        op.matvec(v)
        rec["operator_matvec_seconds"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        op.rmatvec(u)
        rec["operator_rmatvec_seconds"] = time.perf_counter() - t0
    if "floor_padded" in methods:
        rec["floor_padded_seconds"] = _floor(net, tok, texts, bucket, True)
    if "loop" in methods:
        from landscapes.transformer.encoder import LinearizedEncoder

        lin2 = LinearizedEncoder(net, tok, texts, dtype=dtype, bucket_size=bucket)
        t0 = time.perf_counter()
        lin2.reference_jacobian()
        rec["loop_seconds"] = time.perf_counter() - t0
    if "vmap_padded" in methods:
        from landscapes.transformer.encoder import LinearizedEncoder

        lin3 = LinearizedEncoder(net, tok, texts[:2], dtype=dtype)
        t, Jv = _vmap_padded(net, tok, texts, lin3.head_matrix, dtype, bucket)
        rec["vmap_padded_seconds"] = t
        R = lin3.jacobian()  # the same head (head_seed 0): rows of the first two sentences
        rec["vmap_vs_ours_rel_diff"] = float((Jv[:4] - R).norm() / R.norm())
        del Jv
    rec["peak_rss_mb"] = _rss_mb()
    return rec


_COLUMNS = (
    ("N", "N", "d"),
    ("dtype", "dtype", "s"),
    ("floor", "floor_seconds", ".2f"),
    ("ours", "ours_seconds", ".2f"),
    ("ours/floor", "ratio_ours_over_floor", ".2f"),
    ("padded", "floor_padded_seconds", ".2f"),
    ("ours/padded", "ratio_ours_over_floor_padded", ".2f"),
    ("loop", "loop_seconds", ".2f"),
    ("loop/ours", "ratio_loop_over_ours", ".2f"),
    ("vmap", "vmap_padded_seconds", ".2f"),
    ("vmap/ours", "ratio_vmap_over_ours", ".2f"),
    ("J GB", "J_gb", ".2f"),
    ("peak MB", "peak_rss_mb", ".0f"),
)


def _row(rec: dict[str, Any] | None = None) -> str:
    """A table row of a record (the header without one)."""
    cells = []
    for title, key, fmt in _COLUMNS:
        if rec is None:
            text = title
        else:
            v = rec.get(key)
            text = format(v, fmt) if isinstance(v, (int, float, str)) and not isinstance(v, bool) else "-"
        cells.append(f"{text:>{max(len(title), 7)}}")
    return " ".join(cells)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ns", type=int, nargs="+", default=[32, 128, 512])
    ap.add_argument("--dtypes", nargs="+", default=["float64", "float32"])
    ap.add_argument("--methods", nargs="+", default=["ours", "floor_padded", "loop", "vmap_padded"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--bucket", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--worker", nargs=2, metavar=("N", "DTYPE"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        rec = worker(int(args.worker[0]), args.worker[1], args.methods, args.repeats, args.seed, args.bucket)
        print("RESULT " + json.dumps(rec))
        return 0
    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "cuda": torch.cuda.is_available(),
    }
    out: dict[str, Any] = {
        "benchmark": "jacobian",
        "description": __doc__.split("Usage")[0].strip(),
        "environment": env,
        "config": {k: v for k, v in vars(args).items() if k != "worker"},
        "records": [],
    }
    print(f"environment: {env}")
    print(_row())
    for dt in args.dtypes:
        for N in args.ns:
            cmd = [
                sys.executable,
                os.path.abspath(__file__),
                "--worker",
                str(N),
                dt,
                "--methods",
                *args.methods,
                "--repeats",
                str(args.repeats),
                "--bucket",
                str(args.bucket),
                "--seed",
                str(args.seed),
            ]
            res = subprocess.run(cmd, capture_output=True, text=True)
            line = [x for x in res.stdout.splitlines() if x.startswith("RESULT ")]
            if res.returncode != 0 or not line:
                rec = {"N": N, "dtype": dt, "error": res.stderr.strip().splitlines()[-1:]}
                print(f"{N:>5} {dt:>8} failed: {rec['error']}")
            else:
                rec = json.loads(line[0][7:])
                f, o = rec.get("floor_seconds"), rec.get("ours_seconds")
                rec["ratio_ours_over_floor"] = o / f if f and o else None
                if rec.get("floor_padded_seconds") and o:
                    rec["ratio_ours_over_floor_padded"] = o / rec["floor_padded_seconds"]
                if rec.get("loop_seconds") and o:
                    rec["ratio_loop_over_ours"] = rec["loop_seconds"] / o
                if rec.get("vmap_padded_seconds") and o:
                    rec["ratio_vmap_over_ours"] = rec["vmap_padded_seconds"] / o

                print(_row(rec), flush=True)
            out["records"].append(rec)
            os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
            tmp = args.out + ".tmp"
            with open(tmp, "w") as fh:
                json.dump(out, fh, indent=1)
            os.replace(tmp, args.out)
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
