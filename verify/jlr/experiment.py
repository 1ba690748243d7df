r"""The [JLR24] real-model experiment, reproduced in shape on the offline MiniLM and review sentences.

Setup of the paper's Section 6 (NLP tasks): a linearized pretrained encoder, ``N`` training
sentences, ``K = 2``, cross-entropy, LoRA on the last layer's W_q and W_v, weight decay
``lam = 0.01``, learning rate ``1e-3``, batch 32. For each ``N``:

* **training curves** of full fine-tuning (Adam on :math:`L(D) + \tfrac{\lambda}{2}\|D\|_F^2`) and
  of LoRA at each rank ``r`` (Adam on :math:`L(UV^\top) + \tfrac{\lambda}{2}(\|U\|_F^2 + \|V\|_F^2)`,
  standard initialisation ``B = U = 0``), with the certified NUC optimum -- the global minimum of
  every LoRA objective with ``r`` at least the NUC rank -- as the reference level;
* **test accuracy** on held-out sentences (linearized logits :math:`f_0 + J \operatorname{vec} D`
  on the test texts, through the operator form);
* the **certified rank** of the NUC minimizer (the low-rank full fine-tuning solution of the
  theorem) against :math:`r_{\max}`, and how it moves with ``lam``;
* the **SOSP verdict** of each LoRA end point after polishing: certified global or not, and
  whether ``r`` is above the bound :math:`r(r+1)/2 > KN`.

Results go to one JSON file (format ``loracheck.experiment``, version 1: :mod:`verify.results`),
rewritten atomically after every stage, so a killed run keeps what it finished.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from landscapes.nuc import solve_nuc
from landscapes.operators import DenseOperator
from landscapes.problem import Problem
from landscapes.sosp import adam_direction, find_sosp, make_init, train
from theory.bounds import r_max, ranks_above_bound
from theory.errors import UserInputError
from verify.results import ResultsFile

__all__ = [
    "jlr_real_experiment",
    "synthetic_training_curves",
    "EXPERIMENT_FORMAT",
    "EXPERIMENT_VERSION",
    "train_full",
]

#: Files written before the ``version`` key said ``"schema": "loracheck.experiment/1"`` (still drawn).
EXPERIMENT_FORMAT = "loracheck.experiment"
EXPERIMENT_VERSION = 1
#: Test accuracy of the linearized model at an adapted weight ``D``.
_Accuracy = Callable[[Sequence[Tensor]], float]


def train_full(
    problem: Problem,
    *,
    steps: int,
    lr: float = 1e-3,
    batch_size: int | None = None,
    seed: int = 0,
    record_every: int = 10,
) -> tuple[tuple[Tensor, ...], tuple[tuple[int, float, float], ...]]:
    r"""Full fine-tuning by Adam on :math:`L(D) + \tfrac{\lambda_j}{2}\sum_j \|D_j\|_F^2` from ``D = 0``.

    Adam as in :func:`landscapes.sosp.train` (L2 form, :math:`\beta = (0.9, 0.999)`); mini-batches
    of ``batch_size`` examples when it is below ``N``. Returns the end point and
    ``(step, objective, risk)`` every ``record_every`` steps (full-data values).
    """
    for name, v in (("steps", steps), ("record_every", record_every)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise UserInputError(f"{name}: expected a positive int, got {v!r}")
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
    ):
        raise UserInputError(f"batch_size: expected a positive int or None, got {batch_size!r}")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
        raise UserInputError(f"lr: expected a positive number, got {lr!r}")
    D = [torch.zeros(m, n, dtype=problem.dtype, device=problem.device) for m, n in problem.blocks]
    m1 = [torch.zeros_like(d) for d in D]
    m2 = [torch.zeros_like(d) for d in D]
    gen = torch.Generator().manual_seed(seed)
    hist: list[tuple[int, float, float]] = []

    def objective(D: Sequence[Tensor]) -> tuple[float, float]:
        risk = problem.risk(D)
        return risk + sum(lam / 2 * float((d * d).sum()) for lam, d in zip(problem.lam, D)), risk

    batch = problem.N if batch_size is None else int(batch_size)
    stochastic = batch < problem.N
    buf = (
        torch.empty(batch * problem.K, problem.num_params, dtype=problem.dtype, device=problem.device)
        if stochastic and isinstance(problem.J, DenseOperator)
        else None
    )
    for it in range(steps):
        if it % record_every == 0:
            hist.append((it, *objective(D)))
        sub = (
            problem.subset(torch.randperm(problem.N, generator=gen)[:batch], buffer=buf)
            if stochastic
            else problem
        )
        S = sub.evaluate(D).S
        grads = [s + lam * d for d, s, lam in zip(D, S, problem.lam)]
        for d, step in zip(D, adam_direction(grads, m1, m2, it)):
            d.sub_(lr * step)
    hist.append((steps, *objective(D)))
    return tuple(D), tuple(hist)


def _accuracy(test_lin: Any, test_labels: Tensor, D: Sequence[Tensor], op: Any) -> float:
    """Test accuracy of the linearized model at ``D``."""
    x = torch.cat([d.reshape(-1) for d in D])
    z = test_lin.f0() + op.matvec(x).view(-1, test_lin.K)
    return float((z.argmax(1) == test_labels.to(z.device)).to(torch.float64).mean())


def _write(path: Path | None, data: dict[str, Any]) -> None:
    if path is not None:
        ResultsFile(path, fmt=EXPERIMENT_FORMAT, version=EXPERIMENT_VERSION).save(data, allow_nan=True)


@dataclasses.dataclass(frozen=True)
class _Settings:
    """The training settings of one experiment (see :func:`jlr_real_experiment`)."""

    ranks: Sequence[int]
    lam: float
    lr: float
    steps: int
    batch_size: int
    rank_lams: Sequence[float]
    seed: int
    record_every: int


@dataclasses.dataclass
class _Record:
    """The experiment's results, rewritten to ``path`` after every stage, and its progress bar."""

    path: Path | None
    result: dict[str, Any]
    bar: Any

    def save(self) -> None:
        _write(self.path, self.result)

    def stage(self) -> None:
        """A stage is done: write the results, advance the bar."""
        self.save()
        self.bar.update(1)


def _check_experiment_options(s: _Settings, *, ns: Sequence[int], n_test: int, heads: Sequence[str]) -> None:
    for name, vals in (("ns", ns), ("ranks", s.ranks)):
        if not vals or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in vals):
            raise UserInputError(f"{name}: expected positive ints, got {list(vals)!r}")
    for name, v in (
        ("steps", s.steps),
        ("n_test", n_test),
        ("batch_size", s.batch_size),
        ("record_every", s.record_every),
    ):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise UserInputError(f"{name}: expected a positive int, got {v!r}")
    for name, x in (("lam", s.lam), ("lr", s.lr)):
        if isinstance(x, bool) or not isinstance(x, (int, float)) or not x > 0:
            raise UserInputError(f"{name}: expected a positive number, got {x!r}")
    if any(not (isinstance(x, (int, float)) and x > 0) for x in s.rank_lams):
        raise UserInputError(f"rank_lams: expected positive numbers, got {list(s.rank_lams)!r}")
    unknown = [h for h in heads if h not in ("random", "verbalizer")]
    if unknown:
        raise UserInputError(f"heads: expected 'random' and/or 'verbalizer', got {unknown!r}")


def _nuc_entry(problem: Problem, s: _Settings, accuracy: _Accuracy) -> dict[str, Any]:
    """The certified NUC optimum (the low-rank full fine-tuning solution)."""
    t0 = time.perf_counter()
    sol = solve_nuc(problem)
    c = sol.certificate
    return {
        "objective": c.primal,
        "dual": c.dual,
        "rel_gap": c.rel_gap,
        "converged": sol.converged,
        "ranks": list(sol.ranks),
        "singular_values": [list(sv[: max(20, r + 2)]) for sv, r in zip(sol.singular_values, sol.ranks)],
        "S_op_over_lam": [x / s.lam for x in c.S_op],
        "sum_triangular": sum(r * (r + 1) // 2 for r in sol.ranks),
        "train_risk": problem.risk(sol.D),
        "test_accuracy": accuracy(sol.D),
        "seconds": time.perf_counter() - t0,
    }


def _full_ft_entry(problem: Problem, s: _Settings, accuracy: _Accuracy) -> dict[str, Any]:
    """Full fine-tuning's training curve (Adam on its ridge objective)."""
    t0 = time.perf_counter()
    D, hist = train_full(
        problem, steps=s.steps, lr=s.lr, batch_size=s.batch_size, seed=s.seed, record_every=s.record_every
    )
    return {
        "objective_kind": "L(D) + lam/2 ||D||_F^2 (ridge): not the NUC objective of the LoRA curves",
        "curve": [{"step": st, "objective": f, "risk": r} for st, f, r in hist],
        "final_objective": hist[-1][1],
        "final_risk": hist[-1][2],
        "test_accuracy": accuracy(D),
        "seconds": time.perf_counter() - t0,
    }


def _lora_entry(
    problem: Problem, r: int, nuc: dict[str, Any], s: _Settings, accuracy: _Accuracy
) -> dict[str, Any]:
    """LoRA at rank ``r``: Adam from the zero-B start, then polished and certified (the SOSP verdict)."""
    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(s.seed + r)
    init = make_init(problem, [r] * len(problem.blocks), "zero_b", generator=gen)
    pt, hist2 = train(
        problem,
        init,
        optimizer="adam",
        steps=s.steps,
        lr=s.lr,
        batch_size=s.batch_size,
        seed=s.seed,
        record_every=s.record_every,
    )
    Dl = [u @ v.T for u, v in zip(pt.U, pt.V)]
    t_train = time.perf_counter() - t0
    polished = find_sosp(problem, pt, optimizer="lbfgs", seed=s.seed)
    cert = polished.certificate
    above = r * (r + 1) // 2 > problem.KN
    primal, dual = nuc["objective"], nuc["dual"]
    return {
        "r": r,
        "above_bound": above,
        "curve": [{"step": st, "objective": f} for st, f in hist2],
        "final_objective": hist2[-1][1],
        "final_minus_nuc": hist2[-1][1] - primal,
        "final_minus_nuc_dual": hist2[-1][1] - dual,
        "train_risk": problem.risk(Dl),
        "test_accuracy": accuracy(Dl),
        "product_ranks": [int(torch.linalg.matrix_rank(d, rtol=1e-8)) for d in Dl],
        "train_seconds": t_train,
        "polished": {
            "objective": cert.objective,
            "minus_nuc": cert.objective - primal,
            "minus_nuc_dual": cert.objective - dual,
            "is_sosp": cert.is_sosp,
            "is_global": cert.is_global,
            "gap_bound": cert.gap_bound,
            "grad_norm": cert.grad_norm,
            "lambda_min": cert.curvature.value,
            "lambda_min_lower": cert.curvature.lower,
            "product_ranks": list(cert.product_ranks),
            "iterations": polished.iterations,
            "seconds": polished.seconds,
        },
        "verdict": _sosp_verdict(cert.is_sosp, cert.is_global, above),
    }


def _rank_at_lam(problem: Problem, lam_k: float, accuracy: _Accuracy) -> dict[str, Any]:
    """The certified NUC rank of the same data at weight decay ``lam_k``."""
    t0 = time.perf_counter()
    pk = Problem(problem.J, problem.f0, problem.y, loss=problem.loss, blocks=problem.blocks, lam=lam_k)
    sk = solve_nuc(pk)
    return {
        "lam": lam_k,
        "ranks": list(sk.ranks),
        "rel_gap": sk.certificate.rel_gap,
        "converged": sk.converged,
        "r_max": r_max(2, problem.N),
        "train_risk": pk.risk(sk.D),
        "test_accuracy": accuracy(sk.D),
        "seconds": time.perf_counter() - t0,
    }


def _run_n(record: _Record, N: int, net: Any, tok: Any, pool: Any, test_d: Any, s: _Settings) -> None:
    """Every stage for ``N`` training sentences; ``record`` gets them one by one."""
    from landscapes.transformer.data import train_test_split
    from landscapes.transformer.encoder import LinearizedEncoder

    run: dict[str, Any] = {"N": N, "KN": 2 * N, "r_max": r_max(2, N), "seconds": {}}
    record.result["runs"].append(run)
    train_d, _ = train_test_split(pool, n_train=N, seed=s.seed)
    t0 = time.perf_counter()
    lin = LinearizedEncoder(net, tok, list(train_d.texts))
    problem = lin.problem(train_d.label_tensor(), loss="cross_entropy", lam=s.lam)
    run["seconds"]["jacobian"] = time.perf_counter() - t0
    run["linearization"] = lin.check_linearization(problem.J.rows()).to_dict()
    t0 = time.perf_counter()
    test_lin = LinearizedEncoder(net, tok, list(test_d.texts))
    test_op = test_lin.operator()
    test_y = test_d.label_tensor()
    run["seconds"]["test_setup"] = time.perf_counter() - t0

    def accuracy(D: Sequence[Tensor]) -> float:
        return _accuracy(test_lin, test_y, D, test_op)

    zero = [torch.zeros(sz, dtype=torch.float64) for sz in problem.blocks]
    run["pretrained"] = {"train_risk": problem.risk(zero), "test_accuracy": accuracy(zero)}
    run["test_majority_fraction"] = max(test_d.counts()) / len(test_d)
    record.bar.update(1)
    run["nuc"] = _nuc_entry(problem, s, accuracy)
    record.stage()
    run["full_ft"] = _full_ft_entry(problem, s, accuracy)
    record.stage()
    run["lora"] = []
    for r in s.ranks:
        run["lora"].append(_lora_entry(problem, r, run["nuc"], s, accuracy))
        record.stage()
    run["rank_vs_lam"] = []
    for lam_k in s.rank_lams:
        run["rank_vs_lam"].append(_rank_at_lam(problem, lam_k, accuracy))
        record.stage()
    run["seconds"]["total"] = sum(
        [
            run["seconds"]["jacobian"],
            run["seconds"]["test_setup"],
            run["nuc"]["seconds"],
            run["full_ft"]["seconds"],
        ]
        + [e["train_seconds"] + e["polished"]["seconds"] for e in run["lora"]]
        + [e["seconds"] for e in run["rank_vs_lam"]]
    )


def _random_head(
    record: _Record, net: Any, tok: Any, pool: Any, ns: Sequence[int], s: _Settings, variants_too: bool
) -> dict[str, Any]:
    """The certified rank with two more random-head draws and CLS pooling (``N <= 128``).

    The runs use (mean pooling, head_seed 0); these variants certify the rank only.
    """
    from landscapes.transformer.data import train_test_split
    from landscapes.transformer.encoder import LinearizedEncoder

    variants = []
    for N in [n for n in ns if n <= 128 and variants_too]:
        train_d, _ = train_test_split(pool, n_train=N, seed=s.seed)
        pairs: tuple[tuple[Literal["mean", "cls"], int], ...] = (
            ("mean", 0),
            ("mean", 1),
            ("mean", 2),
            ("cls", 0),
        )
        for pooling, head_seed in pairs:
            lin_h = LinearizedEncoder(net, tok, list(train_d.texts), pooling=pooling, head_seed=head_seed)
            J_h = lin_h.jacobian()
            for lam_k in (s.lam, 1e-4):
                ph = lin_h.problem(train_d.label_tensor(), lam=lam_k, J=J_h)
                sh = solve_nuc(ph)
                variants.append(
                    {
                        "N": N,
                        "pooling": pooling,
                        "head_seed": head_seed,
                        "lam": lam_k,
                        "ranks": list(sh.ranks),
                        "rel_gap": sh.certificate.rel_gap,
                        "r_max": r_max(2, N),
                    }
                )
            record.save()
    return {
        "head": "random",
        "available": True,
        "note": "the runs above: mean pooling, head_seed 0",
        "variants": variants,
    }


def _verbalizer_head(model: str | None, pool: Any, ns: Sequence[int], s: _Settings) -> dict[str, Any]:
    """The certified rank with the masked-language-model head (unavailable without its weights)."""
    from landscapes.transformer.data import train_test_split
    from landscapes.transformer.encoder import LinearizedEncoder, load_encoder

    try:
        mlm, mtok = load_encoder(model, head="verbalizer")
    except (FileNotFoundError, ValueError) as exc:
        return {"head": "verbalizer", "available": False, "reason": str(exc).splitlines()[0]}
    entries = []
    for N in ns:
        train_d, _ = train_test_split(pool, n_train=N, seed=s.seed)
        lin_v = LinearizedEncoder(mlm, mtok, list(train_d.texts), head="verbalizer")
        pv = lin_v.problem(train_d.label_tensor(), loss="cross_entropy", lam=s.lam)
        sv = solve_nuc(pv)
        entries.append(
            {"N": N, "ranks": list(sv.ranks), "rel_gap": sv.certificate.rel_gap, "r_max": r_max(2, N)}
        )
    return {"head": "verbalizer", "available": True, "runs": entries}


def jlr_real_experiment(
    *,
    ns: Sequence[int] = (32,),
    ranks: Sequence[int] = (1, 2, 4, 8, 16),
    lam: float = 0.01,
    lr: float = 1e-3,
    steps: int = 2000,
    batch_size: int = 32,
    n_test: int = 1000,
    rank_lams: Sequence[float] = (1e-2, 1e-3, 1e-4, 1e-5),
    heads: Sequence[str] = ("random", "verbalizer"),
    head_variants: bool = True,
    model: str | None = None,
    seed: int = 0,
    record_every: int = 20,
    out: str | Path | None = None,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Run the experiment (module docstring) and return (and write to ``out``) its results.

    ``head_variants``: also certify the NUC rank (at ``lam`` and 1e-4, for ``N <= 128``) with two
    more random-head draws and with CLS pooling, to see how much the rank depends on the head.
    """
    from tqdm.auto import tqdm

    from landscapes.transformer.data import load_reviews, train_test_split
    from landscapes.transformer.encoder import load_encoder

    s = _Settings(ranks, lam, lr, steps, batch_size, rank_lams, seed, record_every)
    _check_experiment_options(s, ns=ns, n_test=n_test, heads=heads)
    path = Path(out) if out is not None else None
    t_all = time.perf_counter()
    data = load_reviews()
    if max(ns) + n_test > len(data):
        raise UserInputError(
            f"ns, n_test: expected max(ns) + n_test <= {len(data)} (the review sentences), "
            f"got {max(ns) + n_test}"
        )
    # one held-out test set for every N; training sets are drawn from the rest
    pool, test_d = train_test_split(data, n_train=len(data) - n_test, n_test=n_test, seed=seed)
    result: dict[str, Any] = {
        "format": EXPERIMENT_FORMAT,
        "version": EXPERIMENT_VERSION,
        "setup": {
            "data": "review sentences (rotten/fresh), deduplicated",
            "model": model or "all-MiniLM-L6-v2 (offline)",
            "targets": "last layer W_q and W_v",
            "loss": "cross_entropy",
            "K": 2,
            "lam": lam,
            "lr": lr,
            "optimizer": "adam",
            "steps": steps,
            "batch_size": batch_size,
            "n_test": n_test,
            "ranks": list(ranks),
            "rank_lams": list(rank_lams),
            "seed": seed,
            "dtype": "float64",
        },
        "runs": [],
        "heads": [],
        "complete": False,
    }
    net, tok = load_encoder(model)
    bar = tqdm(
        total=len(ns) * (3 + len(ranks) + len(rank_lams)),
        desc="experiment",
        disable=None if progress is None else not progress,
    )
    record = _Record(path, result, bar)
    try:
        for N in ns:
            _run_n(record, N, net, tok, pool, test_d, s)
        # ---- heads: the verbalizer needs a masked-language-model head ---------------------------------
        for head in heads:
            if head == "random":
                result["heads"].append(_random_head(record, net, tok, pool, ns, s, head_variants))
            else:
                result["heads"].append(_verbalizer_head(model, pool, ns, s))
        result["complete"] = True
    finally:
        bar.close()
        result["seconds"] = time.perf_counter() - t_all
        _write(path, result)
    return result


def _sosp_verdict(is_sosp: bool, is_global: bool, above: bool) -> str:
    """One word for a polished LoRA end point (the claim concerns ranks above the bound)."""
    if is_sosp and is_global:
        return "certified global"
    if is_sosp:
        return "certified SOSP, not certified global" + (
            " (above the bound: a counterexample?)" if above else ""
        )
    return "not certified (the polish did not reach the tolerances)"


def synthetic_training_curves(
    problem: Problem,
    *,
    ranks: Sequence[int] = (1, 2, 4, 8),
    steps: int = 1500,
    lr: float = 1e-2,
    seed: int = 0,
    record_every: int = 10,
) -> dict[str, Any]:
    r"""Training curves of full fine-tuning and of LoRA per rank on any (synthetic) problem.

    The same measurement as :func:`jlr_real_experiment`'s curves, without a model or a test set:
    Adam (full batch) on the LoRA objective from the zero-B start at each rank, Adam on full
    fine-tuning's ridge objective from ``D = 0``, and the certified NUC optimum.  Returns data in
    the experiment format (``loracheck.experiment``, one run), so that
    :func:`figures.training.plot_training_curves` draws it.
    """
    rs = list(ranks)
    if not rs or any(isinstance(r, bool) or not isinstance(r, int) or r < 1 for r in rs):
        raise UserInputError(f"ranks: expected positive ints, got {ranks!r}")
    t0 = time.perf_counter()
    sol = solve_nuc(problem, gap_rtol=1e-10, seed=seed)
    _, hist = train_full(problem, steps=steps, lr=lr, seed=seed, record_every=record_every)
    gen = torch.Generator().manual_seed(seed)
    rmax = r_max(problem.K, problem.N)
    lora = []
    for r in rs:
        ranks_b = [min(r, m, n) for m, n in problem.blocks]
        init = make_init(problem, ranks_b, "zero_b", generator=gen)
        _, curve = train(
            problem, init, optimizer="adam", steps=steps, lr=lr, seed=seed, record_every=record_every
        )
        final = float(curve[-1][1])
        lora.append(
            {
                "r": r,
                # the no-spurious hypothesis is per block (theory.bounds.ranks_above_bound)
                "above_bound": ranks_above_bound(ranks_b, problem.K, problem.N),
                "curve": [{"step": int(s), "objective": float(v)} for s, v in curve],
                "final_objective": final,
                "final_minus_nuc": final - sol.certificate.primal,
            }
        )
    return {
        "format": EXPERIMENT_FORMAT,
        "version": EXPERIMENT_VERSION,
        "setup": {
            "data": f"synthetic problem {problem.name!r}",
            "loss": problem.loss.name,
            "K": problem.K,
            "lam": problem.lam[0] if len(set(problem.lam)) == 1 else list(problem.lam),
            "lr": lr,
            "optimizer": "adam (full batch)",
            "steps": steps,
            "ranks": rs,
            "seed": seed,
        },
        "runs": [
            {
                "N": problem.N,
                "KN": problem.KN,
                "r_max": rmax,
                "seconds": time.perf_counter() - t0,
                "nuc": {
                    "objective": sol.certificate.primal,
                    "rel_gap": sol.certificate.rel_gap,
                    "ranks": list(sol.ranks),
                },
                "full_ft": {
                    "objective_kind": "L(D) + lam/2 ||D||_F^2 (ridge): not the NUC objective of the LoRA "
                    "curves",
                    "curve": [{"step": int(s), "objective": float(o), "risk": float(k)} for s, o, k in hist],
                },
                "lora": lora,
            }
        ],
        "heads": [],
        "complete": True,
    }
