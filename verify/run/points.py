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
(:func:`verify.jlr.second_order.counterexample_test`); otherwise it is just a point that is not optimal
(exit code 2).  :math:`\varepsilon` is ``gap_rtol`` times :math:`\max(|F|, L(0))`.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import re2
import torch
from torch import Tensor

from landscapes.io import loads_json, read_arrays
from landscapes.lora import LoRAPoint, minimize_lora
from landscapes.nuc import NucSolution, nuc_certificate, solve_nuc
from landscapes.problem import Problem, check_matrix, magnitude_bound
from landscapes.sosp import certify_sosp, gradient_scale, length_scale, make_init, objective_scale
from theory.claims import DEFAULT_TOLERANCES
from theory.errors import InputTypeError, UserInputError, finite_number, shown
from verify.jlr.second_order import counterexample_test
from verify.jsonfile import read_regular_file
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
        The numbers of that test (:func:`verify.jlr.second_order.counterexample_test`), or ``None``.
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
    """Validate a point for ``problem``: a ``(U_j, V_j)`` pair per block, ranks in ``[1, m_j + n_j]``."""
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
            x = check_matrix(f"point.{name}[{j}]", x, rows, None, problem.dtype)
            norm = float(x.abs().max()) * math.sqrt(x.numel()) if x.numel() else 0.0  # >= ||x||_F, finite
            if norm > (bound := math.sqrt(magnitude_bound(problem.dtype))):
                fro = float(torch.linalg.vector_norm(x))
                norm = fro if math.isfinite(fro) else norm  # an overflowing norm: its finite upper bound
                if not fro <= bound:
                    raise UserInputError(
                        f"point.{name}[{j}]: expected a Frobenius norm at most {bound:.3g} (the 8th root of "
                        f"the largest {problem.dtype}: the objective and its derivatives stay finite), "
                        f"got {norm:.3g}"
                    )
        if u.shape[1] != v.shape[1]:
            raise UserInputError(f"point: U[{j}] has {u.shape[1]} columns but V[{j}] has {v.shape[1]}")
        _check_rank(int(u.shape[1]), m, n, j)
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


def _read_arrays(path: Path, max_bytes: int | None) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Arrays (and the safetensors string metadata) of an .npz or .safetensors file, read with bounds."""
    if path.suffix not in (".npz", ".safetensors"):
        raise UserInputError(
            f"point: expected a .npz or .safetensors file or a PEFT adapter directory, got {str(path)!r}"
        )
    return read_arrays(path, what="point", max_bytes=max_bytes, torch_floats=path.suffix == ".safetensors")


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


#: Longest ``rank_pattern`` / ``alpha_pattern`` key and module name matched against one.
MAX_PATTERN_CHARS = 1000
#: Most entries of one ``rank_pattern`` / ``alpha_pattern``.
MAX_PATTERNS = 10_000
#: Largest ``adapter_config.json`` read.
MAX_CONFIG_BYTES = 4 * 2**20
_PEFT_PREFIX = "base_model.model."
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # an invalid pattern is reported by the UserInputError, not on stderr


@dataclass(frozen=True)
class _Pattern:
    """One PEFT pattern key, compiled as PEFT matches it, with RE2 (linear time)."""

    key: str
    value: int | float
    regex: Any

    def matches(self, module: str) -> bool:
        # PEFT: re.match(rf"(.*\.)?({key})$", module), the same text compiled by RE2 and matched
        # at the start only (a key such as ")|(" changes what "$" applies to, in both engines).
        # Python's "$" also matches before a final newline, RE2's does not, and they differ on
        # "\B" against "": module names are non-empty printable ASCII here (_pattern_value).
        return self.regex.match(module) is not None


def _compile_pattern(field: str, key: str) -> Any:
    r"""``(.*\.)?(key)$`` compiled by RE2; invalid, RE2-unsupported or over-long keys are bad input.

    RE2 and Python's ``re`` (which PEFT uses) agree on what they both accept once the key and the
    module names are ASCII (module names are checked in :func:`_pattern_value`), except for the
    constructs refused here: POSIX classes ``[:`` (RE2 reads ``[[:alpha:]]`` as a class, ``re``
    as a set), ``{,n}`` (``re``: ``{0,n}``; RE2: literal text) and ``\1``-``\9`` (``re``: a
    backreference when that many groups exist; RE2: an octal escape). Non-ASCII keys are refused:
    ``re`` and RE2 differ on ``\d``, ``\w``, ``\s``, ``\b`` and case folding beyond ASCII, and
    RE2 cannot encode a lone surrogate.
    """
    where = f"point: adapter_config.json {field} key {shown(key)}"
    if len(key) > MAX_PATTERN_CHARS:
        raise UserInputError(
            f"{where}: expected a pattern of at most {MAX_PATTERN_CHARS} characters, got {len(key)}"
        )
    if not key.isascii():
        bad = next(c for c in key if not c.isascii())
        raise UserInputError(
            f"{where}: expected an ASCII regular expression (PEFT module names are ASCII; Python's re and "
            f"RE2 differ beyond ASCII), got one with {shown(bad)}"
        )
    if "[:" in key:  # RE2 reads [[:alpha:]] as a POSIX class, Python's re as a set: they would differ
        raise UserInputError(f"{where}: expected a regular expression without POSIX classes '[:', got one")
    if "{," in key:  # Python's re reads q{,2} as q{0,2}, RE2 as the text "q{,2}"
        raise UserInputError(
            f"{where}: expected a regular expression without '{{,' (write {{0,n}} for 'at most n'), got one"
        )
    if re.search(r"(?<!\\)(?:\\\\)*\\[1-9]", key):  # re: a backreference; RE2: an octal escape
        raise UserInputError(
            f"{where}: expected a regular expression without backreferences or octal escapes \\1-\\9, got one"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "possible nested set" and the like
            re.compile(rf"(.*\.)?({key})$")  # PEFT compiles it with Python's re: it must be valid there
    except (re.error, RecursionError, OverflowError) as exc:
        raise UserInputError(
            f"{where}: expected a valid regular expression, got one that is not ({exc})"
        ) from None
    try:
        return re2.compile(rf"(.*\.)?({key})$", _RE2_OPTIONS)
    except re2.error as exc:
        why = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else exc
        raise UserInputError(
            f"{where}: expected a regular expression that RE2 runs in linear time (no backreferences, "
            f"lookaround or \\Z), got one it refuses ({why})"
        ) from None


def _positive(value: object, integer: bool) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float) if not integer else int):
        return False
    return finite_number(value) and value > 0


def _read_config(cfg: Path, where: str) -> tuple[dict[str, Any], dict[str, list[_Pattern]]]:
    """``adapter_config.json``, validated: a JSON object whose fields loracheck reads have PEFT's types."""
    # a regular file (never a FIFO or device), at most MAX_CONFIG_BYTES read even if it grows
    text = read_regular_file(
        cfg, what=f"point: adapter_config.json {where}", max_bytes=MAX_CONFIG_BYTES, noun="JSON file"
    )
    config = loads_json(text, f"point: adapter_config.json {where}", expected="a JSON object")
    if not isinstance(config, dict):
        raise UserInputError(
            f"point: adapter_config.json {where}: expected a JSON object, got a JSON {type(config).__name__}"
        )

    def bad(field: str, expected: str) -> UserInputError:
        return UserInputError(
            f"point: adapter_config.json {where}: field {field!r}: expected {expected}, "
            f"got {str(config[field])[:80]!r}"
        )

    if config.get("r") is not None and not _positive(config["r"], True):
        raise bad("r", "a positive integer")
    if config.get("lora_alpha") is not None and not _positive(config["lora_alpha"], False):
        raise bad("lora_alpha", "a positive finite number")
    if config.get("use_rslora") is not None and not isinstance(config["use_rslora"], bool):
        raise bad("use_rslora", "true or false")
    tm = config.get("target_modules")
    if (
        tm is not None
        and not isinstance(tm, str)
        and not (isinstance(tm, list) and all(isinstance(t, str) for t in tm))
    ):
        raise bad("target_modules", "a string, a list of strings or null")
    patterns: dict[str, list[_Pattern]] = {}
    for field, integer in (("rank_pattern", True), ("alpha_pattern", False)):
        pat = config.get(field)
        if pat is None:
            patterns[field] = []
            continue
        if not isinstance(pat, dict):
            raise bad(field, "a JSON object of patterns")
        if len(pat) > MAX_PATTERNS:
            raise bad(field, f"at most {MAX_PATTERNS} patterns")
        for k, v in pat.items():
            if not _positive(v, integer):
                raise UserInputError(
                    f"point: adapter_config.json {where}: field {field!r} key {k[:80]!r}: expected "
                    f"{'a positive integer' if integer else 'a positive finite number'}, got {str(v)[:80]!r}"
                )
        patterns[field] = [_Pattern(k, v, _compile_pattern(field, k)) for k, v in pat.items()]
    return config, patterns


def _pattern_value(patterns: Sequence[_Pattern], module: str) -> int | float | None:
    r"""The value of the first PEFT pattern key that matches ``module`` (as ``peft``'s ``get_pattern_key``).

    ``module`` is the adapter key's module name without PEFT's ``base_model.model.`` prefix (the
    name PEFT matched when it created the adapter). Like PEFT: the first key ``k`` (in file order)
    for which ``re.match(rf"(.*\.)?({k})$", module)`` holds, else the key equal to ``module``.
    """
    if not patterns:
        return None
    if len(module) > MAX_PATTERN_CHARS:
        raise UserInputError(
            f"point: expected PEFT module names of at most {MAX_PATTERN_CHARS} characters to match "
            f"rank_pattern/alpha_pattern keys against, got one of {len(module)}"
        )
    if not (module and module.isascii() and module.isprintable()):
        # Python's re and RE2 agree on non-empty printable ASCII text only (\s, \w, \d, \B, case
        # folding, "$"); PEFT's module names are dotted identifiers
        raise UserInputError(
            "point: expected non-empty PEFT module names of printable ASCII characters to match "
            f"rank_pattern/alpha_pattern keys against, got {shown(module)}"
        )
    for p in patterns:
        if p.matches(module):
            return p.value
    return next((p.value for p in patterns if p.key == module), None)


def _peft_scale(
    config: Mapping[str, Any], patterns: Mapping[str, Sequence[_Pattern]], module: str, r: int
) -> float:
    """``lora_alpha / r`` (``/ sqrt(r)`` with rsLoRA) for one module, honouring the patterns."""
    name = module[len(_PEFT_PREFIX) :] if module.startswith(_PEFT_PREFIX) else module
    r_pat = _pattern_value(patterns["rank_pattern"], name)
    r_cfg = r_pat if r_pat is not None else config.get("r")
    if r_cfg != r:
        raise UserInputError(
            f"point: adapter_config.json gives r = {r_cfg!r} for {module!r} but its lora_A has {r} rows"
        )
    a_pat = _pattern_value(patterns["alpha_pattern"], name)
    alpha = a_pat if a_pat is not None else config.get("lora_alpha")
    if not _positive(alpha, False):
        raise UserInputError(f"point: adapter_config.json needs a positive lora_alpha, got {alpha!r}")
    assert isinstance(alpha, (int, float))
    scale = float(alpha) / (math.sqrt(r) if config.get("use_rslora") else r)
    if not scale > 0:  # lora_alpha = 5e-324 over r = 2 rounds to 0: the point would silently be D = 0
        raise UserInputError(
            f"point: adapter_config.json gives {module!r} the scale lora_alpha / r = {alpha!r} / {r}, which "
            "rounds to 0 in float64; expected a positive scale"
        )
    return scale


def load_point(
    path: str | os.PathLike[str],
    problem: Problem,
    *,
    scale: float | None = None,
    max_bytes: int | None = None,
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
      :class:`landscapes.transformer.encoder.LinearizedEncoder`).

    Scaled factors are returned balanced in scale: :math:`U = \sqrt{s}\,B`, :math:`V = \sqrt{s}\,A^\top`.
    Returns the point and a description of what was read.

    Hostile input is refused (:class:`~theory.errors.UserInputError`) before anything big is read
    or computed: files are read by :func:`landscapes.io.read_arrays` (declared sizes against the
    memory budget ``max_bytes``); ``adapter_config.json`` must be a JSON object whose ``r``,
    ``lora_alpha``, ``use_rslora``, ``target_modules``, ``rank_pattern`` and ``alpha_pattern`` have
    PEFT's types; pattern keys are matched as PEFT matches them
    (``re.match(rf"(.*\.)?({key})$", module)``, the same expression) but by RE2, in linear time,
    so keys RE2 cannot run (backreferences, lookaround) are refused, as are the few constructs the
    two engines read differently (``{,n}``, ``\1``-``\9``, POSIX classes, non-ASCII keys; module
    names must then be non-empty printable ASCII), keys and module names over
    :data:`MAX_PATTERN_CHARS` characters; every rank must be in ``[1, m_j + n_j]``.
    """
    path = Path(path)
    if scale is not None:
        scale = _check_scale(scale, "scale")
    config: dict[str, Any] = {}
    patterns: dict[str, list[_Pattern]] = {"rank_pattern": [], "alpha_pattern": []}
    if path.is_dir():
        st = path / "adapter_model.safetensors"
        if not st.is_file():
            raise UserInputError(
                f"point: expected a PEFT adapter directory with adapter_model.safetensors, got {str(path)!r}"
            )
        cfg = path / "adapter_config.json"
        if cfg.is_file():
            config, patterns = _read_config(cfg, f"in {str(path)!r}")
        file = st
    elif path.is_file():
        file = path
        cfg = path.parent / "adapter_config.json"
        if path.name == "adapter_model.safetensors" and cfg.is_file():
            config, patterns = _read_config(cfg, f"next to {str(path)!r}")
    else:
        raise UserInputError(f"point: expected an existing file or PEFT adapter directory, got {str(path)!r}")
    arrays, _meta = _read_arrays(file, max_bytes)
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
        _check_factors(problem, layout, pairs)
        scales = [1.0] * b
    else:
        peft = _peft_pairs(arrays, problem)
        if peft is not None:
            layout = "peft"
            pairs = [(B, A) for _, B, A in peft]
            _check_factors(problem, layout, pairs)
            if scale is not None:
                scales = [float(scale)] * b
            elif config:
                scales = [_peft_scale(config, patterns, m, int(A.shape[0])) for m, _, A in peft]
            else:
                raise UserInputError(
                    "scale: a PEFT adapter without its adapter_config.json needs --scale (lora_alpha / r)"
                )
        elif all(f"B{j}" in arrays and f"A{j}" in arrays for j in range(b)):
            layout = "BA"
            pairs = [(arrays[f"B{j}"], arrays[f"A{j}"]) for j in range(b)]
            _check_factors(problem, layout, pairs)
            if scale is not None:
                s_ = float(scale)
            elif "scale" in arrays:
                s_ = _check_scale(arrays["scale"], f"point: key 'scale' of {str(file)!r}")
            else:
                s_ = 1.0
            scales = [s_] * b
        else:
            raise UserInputError(
                f"point: expected keys U0..U{b - 1} and V0..V{b - 1}, or B0/A0.. (PEFT convention), or PEFT "
                f"'<module>.lora_A.weight' keys; got {sorted(arrays)[:12]}"
            )
    U, V = [], []
    for (x, y), s in zip(pairs, scales):
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


def _check_scale(value: object, what: str) -> float:
    """A LoRA scale: a real, finite, positive number (a Python or NumPy scalar or a 1-element array)."""
    v = value
    if isinstance(v, np.ndarray):
        if v.size != 1:
            raise UserInputError(
                f"{what}: expected a positive finite number, got an array of shape {v.shape}"
            )
        v = v.reshape(()).item() if v.dtype.kind in "biufc" else v
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        got = f"dtype {value.dtype}" if isinstance(value, np.ndarray) else f"a {type(v).__name__} {v!r:.40}"
        raise InputTypeError(f"{what}: expected a positive finite number, got {got}")
    if not (math.isfinite(v) and v > 0):
        raise UserInputError(f"{what}: expected a positive finite number, got {v!r}")
    return float(v)


def _check_factors(problem: Problem, layout: str, pairs: Sequence[tuple[np.ndarray, np.ndarray]]) -> None:
    """Shapes and ranks of the factor arrays, before any conversion: ``1 <= r <= m_j + n_j``."""
    names = ("U", "V") if layout == "UV" else ("B", "A")
    for j, ((x, y), (m, n)) in enumerate(zip(pairs, problem.blocks)):
        for name, a in ((names[0] + str(j), x), (names[1] + str(j), y)):
            if not isinstance(a, np.ndarray) or a.ndim != 2 or a.dtype.kind != "f":
                got = f"{a.dtype} of shape {a.shape}" if isinstance(a, np.ndarray) else type(a).__name__
                raise UserInputError(f"point.{name}: expected a 2-D floating array, got {got}")
        r = int(x.shape[1])
        want = ((m, r), (n, r)) if layout == "UV" else ((m, r), (r, n))
        for name, a, (rows, cols) in zip(names, (x, y), want):
            if a.shape != (rows, cols):
                shown = f"({rows}, r)" if name in "UVB" else f"(r, {cols})"
                raise UserInputError(
                    f"point.{name}[{j}]: expected shape {shown} with r = {r} (block {j} is {m} x {n}), "
                    f"got {tuple(a.shape)}"
                )
        _check_rank(r, m, n, j)


def _check_rank(r: int, m: int, n: int, j: int) -> None:
    # m + n, not min(m, n): ranks above min(m, n) are admissible LoRA points (JLR-no-spurious's
    # hypothesis needs them on small blocks, and saves its counterexamples at them); m + n bounds
    # the factors' size, as for the rank options (verify.options)
    if not 1 <= r <= m + n:
        raise UserInputError(
            f"point: block {j} ({m} x {n}): expected a LoRA rank r with 1 <= r <= m + n = {m + n}, got {r}"
        )


def point_from_extras(extras: Mapping[str, np.ndarray], problem: Problem) -> LoRAPoint | None:
    """The LoRA point ``U0, V0, ...`` stored in a counterexample file, if any."""
    b = len(problem.blocks)
    if not all(f"U{j}" in extras and f"V{j}" in extras for j in range(b)):
        return None
    pairs = [(extras[f"U{j}"], extras[f"V{j}"]) for j in range(b)]
    _check_factors(problem, "UV", pairs)  # dtypes (a text or complex extra), shapes, ranks
    return as_point(
        problem,
        (
            tuple(torch.from_numpy(np.array(u)).to(problem.dtype) for u, _ in pairs),
            tuple(torch.from_numpy(np.array(v)).to(problem.dtype) for _, v in pairs),
        ),
    )
