r"""LoRA points a user trained: reading them (our factors, PEFT's ``B, A``) and certifying them.

A point :math:`(U, V)` (one factor pair per adapted block, :math:`D_j = U_jV_j^\top`) is audited for
the LoRA objective

.. math::

    F(U, V) = L(UV^\top) + \tfrac{\lambda}{2}(\|U\|_F^2 + \|V\|_F^2):

is it a second-order stationary point (gradient norm, rigorous :math:`\lambda_{\min}` bound, see
:func:`landscapes.sosp.certify_sosp`), and is it global?  Global optimality is decided against the
certified NUC optimum :math:`[\Delta, P]` (dual and primal values bracketing
:math:`\min_D L(D) + \lambda\|D\|_*`).  Since :math:`F(U, V) \ge L(UV^\top) + \lambda\|UV^\top\|_*
\ge \min \mathrm{NUC}` (the variational form of the nuclear norm), a point with
:math:`F - \Delta \le \varepsilon` is global for every rank; when the LoRA rank is at least the
rank of the certified NUC solution (its balanced factors are then an admissible rank-``r`` point
of objective :math:`P`), a point with :math:`F - P > \varepsilon` is certified *not* global.
Anything in between is ``"undecided"``.

A point that is not global is a *counterexample* (a spurious SOSP, exit code 1 in ``loracheck
audit``) only when it is an approximate SOSP and an exact local minimizer provably lies near it
with an objective still above :math:`P_r + \varepsilon`
(:func:`verify.landscape.counterexample_test`); otherwise it is just a point that is not optimal
(exit code 2).  :math:`\varepsilon` is ``gap_rtol`` times :math:`\max(|F|, L(0))`.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from landscapes.lora import LoRAPoint, minimize_lora
from landscapes.nuc import NucSolution, nuc_certificate, solve_nuc
from landscapes.problem import Problem
from landscapes.sosp import certify_sosp, gradient_scale, length_scale, make_init, objective_scale
from theory.claims import DEFAULT_TOLERANCES
from theory.errors import UserInputError
from verify.landscape import counterexample_test
from verify.verdict import jsonable

__all__ = ["PointAudit", "audit_point", "load_point", "point_from_extras", "as_point"]

_T = DEFAULT_TOLERANCES


@dataclass(frozen=True)
class PointAudit:
    r"""Whether a LoRA point is an SOSP of :math:`F`, and whether it is global.

    Attributes
    ----------
    status
        ``"global"`` (:math:`F - \Delta \le \varepsilon`), ``"not global"`` (:math:`F - P >
        \varepsilon`, against an admissible rank-``r`` point) or ``"undecided"``;
        :math:`\varepsilon` = ``gap_rtol * max(|F|, L(0))``.
    is_sosp
        Certified approximate SOSP (gradient norm and rigorous :math:`\lambda_{\min}` bound).
    objective
        :math:`F(U, V)`.
    nuc_dual, nuc_primal
        The certified bracket :math:`\Delta \le \min\mathrm{NUC} \le P`.
    excess_upper, excess_lower
        :math:`F - \Delta` and :math:`F - P`: bounds on :math:`F - \min\mathrm{NUC}`.
    ranks, product_ranks, nuc_ranks
        LoRA ranks ``r_j``, numerical ranks of :math:`U_jV_j^\top`, ranks of the NUC solution.
    imbalance
        :math:`\|U^\top U - V^\top V\|_F / (\|U\|_F^2 + \|V\|_F^2)` per block (0 at global minima).
    sosp
        The full SOSP certificate (:meth:`landscapes.sosp.SOSPCertificate.to_dict`).
    reason
        One sentence.
    spurious
        ``True``: a certified counterexample (an exact local minimizer near the point, not
        global; module docstring); ``False``: not one or not certified; ``None``: not tested (the
        point is global or undecided).
    counterexample
        The numbers of that test (:func:`verify.landscape.counterexample_test`), or ``None``.
    """

    status: str
    is_sosp: bool
    objective: float
    nuc_dual: float
    nuc_primal: float
    excess_upper: float
    excess_lower: float
    ranks: tuple[int, ...]
    product_ranks: tuple[int, ...]
    nuc_ranks: tuple[int, ...]
    imbalance: tuple[float, ...]
    sosp: Mapping[str, Any]
    reason: str
    source: str | None = None
    spurious: bool | None = None
    counterexample: Mapping[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data."""
        return jsonable(
            {
                "status": self.status,
                "is_sosp": self.is_sosp,
                "objective": self.objective,
                "nuc_dual": self.nuc_dual,
                "nuc_primal": self.nuc_primal,
                "excess_upper": self.excess_upper,
                "excess_lower": self.excess_lower,
                "ranks": list(self.ranks),
                "product_ranks": list(self.product_ranks),
                "nuc_ranks": list(self.nuc_ranks),
                "imbalance": list(self.imbalance),
                "sosp": dict(self.sosp),
                "reason": self.reason,
                "source": self.source,
                "spurious": self.spurious,
                "counterexample": None if self.counterexample is None else dict(self.counterexample),
            }
        )

    def summary(self) -> str:
        """One line for a terminal."""
        where = f" {self.source}:" if self.source else ""
        status = self.status
        if status == "not global":
            status += (
                " (a certified spurious local minimizer nearby)"
                if self.spurious
                else " (no exact local minimizer certified nearby: not a counterexample)"
            )
        return (
            f"point{where} {status}, {'an approximate SOSP' if self.is_sosp else 'not an approximate SOSP'} "
            f"(LoRA rank {list(self.ranks)}, rank of UV^T {list(self.product_ranks)}); "
            f"F - min NUC in [{self.excess_lower:.2e}, {self.excess_upper:.2e}]; {self.reason}"
        )


def _imbalance(u: Tensor, v: Tensor) -> float:
    """``||U^T U - V^T V||_F / (||U||_F^2 + ||V||_F^2)`` (scale-free; 0 for a zero block)."""
    den = float(u.square().sum() + v.square().sum())
    return float(torch.linalg.matrix_norm(u.T @ u - v.T @ v)) / den if den > 0 else 0.0


def as_point(problem: Problem, point: LoRAPoint | tuple[Sequence[Tensor], Sequence[Tensor]]) -> LoRAPoint:
    """Validate a point for ``problem`` (one ``(U_j, V_j)`` pair per block, float64-compatible)."""
    U: Sequence[Tensor]
    V: Sequence[Tensor]
    if isinstance(point, LoRAPoint):
        U, V = point.U, point.V
    elif isinstance(point, tuple) and len(point) == 2:
        U, V = point
        if isinstance(U, Tensor):
            U = (U,)
        if isinstance(V, Tensor):
            V = (V,)
    else:
        raise UserInputError(
            f"point: expected a LoRAPoint or a pair (U, V) of factor lists, got {type(point).__name__}"
        )
    U, V = tuple(U), tuple(V)
    if len(U) != len(problem.blocks) or len(V) != len(problem.blocks):
        raise UserInputError(
            f"point: expected {len(problem.blocks)} factor pairs (one per block), "
            f"got {len(U)} U and {len(V)} V"
        )
    for j, (u, v, (m, n)) in enumerate(zip(U, V, problem.blocks)):
        for name, x, rows in (("U", u, m), ("V", v, n)):
            if not isinstance(x, Tensor) or x.ndim != 2 or x.shape[0] != rows:
                got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
                raise UserInputError(f"point.{name}[{j}]: expected shape ({rows}, r), got {got}")
            if x.dtype != problem.dtype:
                raise UserInputError(f"point.{name}[{j}]: expected dtype {problem.dtype}, got {x.dtype}")
            if not bool(torch.isfinite(x).all()):
                raise UserInputError(f"point.{name}[{j}]: expected finite entries, got NaN or inf")
        if u.shape[1] != v.shape[1]:
            raise UserInputError(f"point: U[{j}] has {u.shape[1]} columns but V[{j}] has {v.shape[1]}")
    return LoRAPoint(U, V)


def audit_point(
    problem: Problem,
    point: LoRAPoint | tuple[Sequence[Tensor], Sequence[Tensor]],
    *,
    solution: NucSolution | None = None,
    grad_rtol: float = _T.grad_rtol,
    curvature_rtol: float = _T.curvature_rtol,
    gap_rtol: float = _T.gap_rtol,
    rank_rtol: float = _T.rank_rtol,
    seed: int = 0,
    source: str | None = None,
    reference_starts: int = 4,
) -> PointAudit:
    r"""Certify a LoRA point: SOSP or not (gradient, :math:`\lambda_{\min}`), global or not (NUC).

    ``solution`` is a NUC solution to reuse (re-certified here); the tolerances are those of
    :func:`landscapes.sosp.certify_sosp` and the global test (module docstring).  The upper bound
    on the rank-``r`` optimum is the NUC solution truncated to the point's ranks, or, when that
    does not beat the point, the best of ``reference_starts`` seeded L-BFGS runs at those ranks.
    """
    pt = as_point(problem, point)
    if problem.dtype != torch.float64:
        raise UserInputError(f"problem: point audits need float64 certificates, got {problem.dtype}")
    sol = solution if solution is not None else solve_nuc(problem, gap_rtol=min(1e-10, gap_rtol), seed=seed)
    nc = nuc_certificate(problem, problem.check_point(sol.D, "solution.D"))
    sc = certify_sosp(
        problem,
        pt.U,
        pt.V,
        grad_rtol=grad_rtol,
        curvature_rtol=curvature_rtol,
        gap_rtol=gap_rtol,
        rank_rtol=rank_rtol,
    )
    F = sc.objective
    eps = gap_rtol * objective_scale(problem, F)
    up = F - nc.dual
    # The NUC solution truncated to the point's LoRA ranks is an admissible rank-r point (its
    # balanced factors have LoRA objective equal to its NUC objective P_r), so the rank-r optimum
    # is at most P_r, and F - P_r > eps certifies that the point is not a global minimizer.
    ranks = [int(u.shape[1]) for u in pt.U]
    D_r = []
    for Dj, r in zip(sol.D, ranks):
        P_, sv, Qh = torch.linalg.svd(Dj, full_matrices=False)
        D_r.append((P_[:, :r] * sv[:r]) @ Qh[:r])
    P_r = nuc_certificate(problem, tuple(D_r)).primal
    reference_source = "the NUC solution truncated to the point's ranks"
    if F - P_r <= eps and F - nc.dual > eps and reference_starts > 0:
        # The truncated NUC solution does not beat the point: try a few L-BFGS runs at its ranks
        # (each end point is an admissible rank-r point, so its objective bounds the optimum too).
        for k in range(reference_starts):
            gen = torch.Generator().manual_seed(seed * 1009 + k)
            kind = ("gaussian", "small", "large", "zero_b")[k % 4]
            start = make_init(problem, ranks, kind, generator=gen, scale=length_scale(problem))  # type: ignore[arg-type]
            res = minimize_lora(problem, rank=ranks, init=start, grad_tol=0.0, max_iter=2000)
            if res.value < P_r:
                P_r, reference_source = res.value, f"an L-BFGS end point at the point's ranks (start {k})"
    low = F - P_r
    if up <= eps:
        status = "global"
        reason = f"F - (certified lower bound on min NUC) = {up:.2e} <= {eps:.2e}"
    elif sc.is_global:
        status = "global"
        reason = f"certified global by the SOSP certificate's gap bound {sc.gap_bound:.2e}"
    elif low > eps:
        status = "not global"
        reason = (
            f"F exceeds the objective of an admissible rank-{ranks} point ({reference_source}) by "
            f"{low:.2e} > {eps:.2e}"
        )
    else:
        status = "undecided"
        reason = f"F - min NUC lies in [{F - nc.primal:.2e}, {up:.2e}]; tolerance {eps:.2e}"
    spurious: bool | None = None
    test: dict[str, Any] | None = None
    if status == "not global":
        spurious = False
        if sc.is_sosp:
            test = counterexample_test(
                problem,
                pt,
                None,
                sc.stacked_ranks,
                ranks,
                P_r,
                order=2,
                grad_norm=sc.grad_norm,
                grad_tol=grad_rtol * gradient_scale(problem),
                gap_rtol=gap_rtol,
                method="auto",
            )
            spurious = bool(test["certified"])
            reason += f"; {'a certified spurious local minimizer' if spurious else 'not a counterexample'}: "
            reason += test["why"]
        else:
            reason += "; not an approximate SOSP, so not a counterexample"
    imb = tuple(_imbalance(u, v) for u, v in zip(pt.U, pt.V))
    return PointAudit(
        status=status,
        is_sosp=sc.is_sosp,
        objective=F,
        nuc_dual=nc.dual,
        nuc_primal=nc.primal,
        excess_upper=up,
        excess_lower=F - nc.primal,
        ranks=tuple(int(u.shape[1]) for u in pt.U),
        product_ranks=sc.product_ranks,
        nuc_ranks=tuple(sol.ranks),
        imbalance=imb,
        sosp=sc.to_dict(),
        reason=f"{sc.reason}; {reason}",
        source=source,
        spurious=spurious,
        counterexample=test,
    )


def _read_arrays(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Arrays (and the safetensors string metadata) of an .npz or .safetensors file."""
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}, {}
        except Exception as exc:  # noqa: BLE001 - any unreadable file is bad input
            raise UserInputError(f"point: expected a readable .npz file, got {str(path)!r} ({exc})") from None
    if path.suffix == ".safetensors":
        try:
            from safetensors import safe_open
        except ImportError:  # pragma: no cover - safetensors is a dependency
            raise UserInputError("point: reading .safetensors needs the package safetensors") from None
        try:
            with safe_open(str(path), framework="pt") as fh:  # type: ignore[no-untyped-call]
                meta = fh.metadata() or {}
                out = {}
                for k in fh.keys():
                    t = fh.get_tensor(k)
                    out[k] = (t.double() if t.is_floating_point() else t).numpy()
                return out, dict(meta)
        except Exception as exc:  # noqa: BLE001
            raise UserInputError(
                f"point: expected a readable .safetensors file, got {str(path)!r} ({exc})"
            ) from None
    raise UserInputError(
        f"point: expected a .npz or .safetensors file or a PEFT adapter directory, got {str(path)!r}"
    )


def _peft_pairs(
    arrays: Mapping[str, np.ndarray], problem: Problem
) -> list[tuple[str, np.ndarray, np.ndarray]] | None:
    """PEFT keys ``<module>.lora_A.weight`` / ``<module>.lora_B.weight`` matched to the blocks."""
    if any("lora_magnitude_vector" in k for k in arrays):
        raise UserInputError("point: a DoRA adapter (lora_magnitude_vector) is not a LoRA update s B A")
    a_keys = sorted(k for k in arrays if k.endswith("lora_A.weight"))
    if not a_keys:
        return None
    modules = [k[: -len(".lora_A.weight")] for k in a_keys]
    for m in modules:
        if m + ".lora_B.weight" not in arrays:
            raise UserInputError(f"point: PEFT adapter {m!r} has lora_A but no lora_B weight")
    targets = problem.meta.get("targets")
    if isinstance(targets, list) and len(targets) == len(problem.blocks):
        chosen = []
        for t in targets:
            mod = str(t)[: -len(".weight")] if str(t).endswith(".weight") else str(t)
            hits = [m for m in modules if m == mod or m.endswith("." + mod)]
            if len(hits) != 1:
                raise UserInputError(
                    f"point: expected one PEFT adapter for the problem's target {t!r}, found {len(hits)} "
                    f"among {modules}"
                )
            chosen.append(hits[0])
        extra = sorted(set(modules) - set(chosen))
        if extra:
            raise UserInputError(f"point: the adapter also adapts modules the problem does not have: {extra}")
    elif len(modules) == len(problem.blocks) == 1:
        chosen = modules
    else:
        raise UserInputError(
            f"point: {len(modules)} PEFT adapters for {len(problem.blocks)} blocks and no meta['targets'] "
            "naming the problem's blocks; save the factors as U0, V0, ... instead"
        )
    return [(m, arrays[m + ".lora_B.weight"], arrays[m + ".lora_A.weight"]) for m in chosen]


def _pattern_value(pattern: object, module: str) -> object:
    """The value of a PEFT ``rank_pattern`` / ``alpha_pattern`` entry that matches ``module``."""
    if not isinstance(pattern, dict):
        return None
    for key, val in pattern.items():
        if module == key or module.endswith("." + key) or re.fullmatch(str(key), module):
            return val
    return None


def _peft_scale(config: Mapping[str, Any], module: str, r: int) -> float:
    """``lora_alpha / r`` (``/ sqrt(r)`` with rsLoRA) for one module, honouring the patterns."""
    r_cfg = _pattern_value(config.get("rank_pattern"), module) or config.get("r")
    if r_cfg != r:
        raise UserInputError(
            f"point: adapter_config.json gives r = {r_cfg!r} for {module!r} but its lora_A has {r} rows"
        )
    alpha = _pattern_value(config.get("alpha_pattern"), module) or config.get("lora_alpha")
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not alpha > 0:
        raise UserInputError(f"point: adapter_config.json needs a positive lora_alpha, got {alpha!r}")
    return float(alpha) / (math.sqrt(r) if config.get("use_rslora") else r)


def load_point(
    path: str | os.PathLike[str], problem: Problem, *, scale: float | None = None
) -> tuple[LoRAPoint, dict[str, Any]]:
    r"""Read a LoRA point for ``problem`` from a file or a PEFT adapter directory.

    Accepted layouts (``j`` = block index, blocks in the problem's order):

    * ``U0, V0, U1, V1, ...``: :math:`D_j = U_j V_j^\top` (``U_j`` is ``m_j x r``, ``V_j`` is
      ``n_j x r``), in ``.npz`` or ``.safetensors``;
    * ``B0, A0, ...`` (the PEFT convention: ``B_j`` is ``m_j x r``, ``A_j`` is ``r x n_j``):
      :math:`D_j = s\,B_jA_j` with the scale ``s`` (``scale``, else a scalar key ``scale``, else 1);
    * a PEFT adapter: a directory with ``adapter_model.safetensors`` (and ``adapter_config.json``
      for ``s = lora_alpha / r``, or ``lora_alpha / sqrt(r)`` with ``use_rslora``), or the
      ``.safetensors`` file itself; keys ``<module>.lora_A.weight`` / ``<module>.lora_B.weight``
      are matched to the blocks by ``problem.meta['targets']`` (weight names, as recorded by
      :class:`landscapes.transformer.LinearizedEncoder`).

    Scaled factors are returned balanced in scale: :math:`U = \sqrt{s}\,B`, :math:`V = \sqrt{s}\,A^\top`.
    Returns the point and a description of what was read.
    """
    path = Path(path)
    if scale is not None and not (
        isinstance(scale, (int, float)) and not isinstance(scale, bool) and math.isfinite(scale) and scale > 0
    ):
        raise UserInputError(f"scale: expected a positive finite number, got {scale!r}")
    config: dict[str, Any] = {}
    if path.is_dir():
        st = path / "adapter_model.safetensors"
        if not st.is_file():
            raise UserInputError(
                f"point: expected a PEFT adapter directory with adapter_model.safetensors, got {str(path)!r}"
            )
        cfg = path / "adapter_config.json"
        if cfg.is_file():
            try:
                config = json.loads(cfg.read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise UserInputError(
                    f"point: unreadable adapter_config.json in {str(path)!r} ({exc})"
                ) from None
        file = st
    elif path.is_file():
        file = path
        cfg = path.parent / "adapter_config.json"
        if path.name == "adapter_model.safetensors" and cfg.is_file():
            try:
                config = json.loads(cfg.read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise UserInputError(
                    f"point: unreadable adapter_config.json next to {str(path)!r} ({exc})"
                ) from None
    else:
        raise UserInputError(f"point: expected an existing file or PEFT adapter directory, got {str(path)!r}")
    arrays, _meta = _read_arrays(file)
    b = len(problem.blocks)
    info: dict[str, Any] = {"path": str(path)}
    pairs: list[tuple[np.ndarray, np.ndarray]]
    scales: list[float]
    if all(f"U{j}" in arrays and f"V{j}" in arrays for j in range(b)):
        if scale is not None:
            raise UserInputError(
                "scale: a U, V point has no scale (D = U V^T); pass it only with B, A factors"
            )
        layout = "UV"
        pairs = [(arrays[f"U{j}"], arrays[f"V{j}"]) for j in range(b)]
        scales = [1.0] * b
    else:
        peft = _peft_pairs(arrays, problem)
        if peft is not None:
            layout = "peft"
            pairs = [(B, A) for _, B, A in peft]
            if scale is not None:
                scales = [float(scale)] * b
            elif config:
                scales = [_peft_scale(config, m, int(np.asarray(A).shape[0])) for m, _, A in peft]
            else:
                raise UserInputError(
                    "scale: a PEFT adapter without its adapter_config.json needs --scale (lora_alpha / r)"
                )
        elif all(f"B{j}" in arrays and f"A{j}" in arrays for j in range(b)):
            layout = "BA"
            pairs = [(arrays[f"B{j}"], arrays[f"A{j}"]) for j in range(b)]
            if scale is not None:
                s_ = float(scale)
            elif "scale" in arrays:
                s_ = float(np.asarray(arrays["scale"]).reshape(()))
            else:
                s_ = 1.0
            if not (math.isfinite(s_) and s_ > 0):
                raise UserInputError(f"point: expected a positive scale, got {s_!r}")
            scales = [s_] * b
        else:
            raise UserInputError(
                f"point: expected keys U0..U{b - 1} and V0..V{b - 1}, or B0/A0.. (PEFT convention), or PEFT "
                f"'<module>.lora_A.weight' keys; got {sorted(arrays)[:12]}"
            )
    U, V = [], []
    for j, ((x, y), s) in enumerate(zip(pairs, scales)):
        for name, a in ((layout[0] + str(j), x), (layout[1] + str(j), y)):
            if not isinstance(a, np.ndarray) or a.ndim != 2 or a.dtype.kind != "f":
                got = f"{a.dtype} of shape {a.shape}" if isinstance(a, np.ndarray) else type(a).__name__
                raise UserInputError(f"point.{name}: expected a 2-D floating array, got {got}")
        tx = torch.from_numpy(np.array(x, dtype=np.float64))
        ty = torch.from_numpy(np.array(y, dtype=np.float64))
        if layout == "UV":
            U.append(tx)
            V.append(ty)
        else:  # B (m x r), A (r x n): D = s B A = (sqrt(s) B)(sqrt(s) A^T)^T
            U.append(math.sqrt(s) * tx)
            V.append(math.sqrt(s) * ty.T.contiguous())
    info.update(layout=layout, scale=scales[0] if layout != "UV" and len(set(scales)) == 1 else scales)
    if layout == "UV":
        info["scale"] = None
    pt = as_point(problem, (tuple(u.to(problem.dtype) for u in U), tuple(v.to(problem.dtype) for v in V)))
    return pt, info


def point_from_extras(extras: Mapping[str, np.ndarray], problem: Problem) -> LoRAPoint | None:
    """The LoRA point ``U0, V0, ...`` stored in a counterexample file, if any."""
    b = len(problem.blocks)
    if not all(f"U{j}" in extras and f"V{j}" in extras for j in range(b)):
        return None
    return as_point(
        problem,
        (
            tuple(torch.from_numpy(np.array(extras[f"U{j}"])).to(problem.dtype) for j in range(b)),
            tuple(torch.from_numpy(np.array(extras[f"V{j}"])).to(problem.dtype) for j in range(b)),
        ),
    )
