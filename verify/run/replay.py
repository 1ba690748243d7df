"""Replaying a saved counterexample that is not a problem file: [KKR25] end points, an [HSK24] head.

A ``problem`` counterexample (:mod:`verify.counterexample`) is a problem file, and ``loracheck
audit`` re-runs its checker (:func:`verify.run.audits.replay_options`).  The other kinds hold what
the checker judged, not all of its evidence, so :func:`replay_counterexample` recomputes the
refuting numbers from the saved arrays and compares them with the record:

* ``nonlinear`` (the KKR checkers): the problem is rebuilt from its catalog entry
  (:data:`landscapes.catalog.KKR_PROBLEMS`, checked against the saved fingerprint); at every saved
  end point the LoRA objective, the penalized value and the gradient norm are recomputed, and the
  reference's penalized value.  Reproduced: values agree to ``1e-9`` (relative), the gradient
  norm within the SOSP tolerance ``grad_rtol * ||grad L(0)||``.
* ``attention`` (the HSK checkers): the head is rebuilt from its arrays and the refuting inequality
  re-evaluated with the checker's own code: the exact gradients' error against autograd over
  ``rtol`` (HSK-exact), the Taylor entry error over its allowance (HSK-poly-error), no degree
  within ``max_degree`` meeting ``target`` (the planted HSK-below variant).

A replay that reproduces the counterexample exits 1 (the claim stays refuted), one that does not 2.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from theory.errors import UserInputError
from verify.counterexample import Counterexample

__all__ = ["Replay", "replay_counterexample"]

#: Relative agreement of recomputed values with the recorded ones (round-off, thread counts).
VALUE_RTOL = 1e-9


@dataclass(frozen=True)
class Replay:
    """The recomputed numbers of a counterexample: one row per number, and whether all agree."""

    claim: str
    kind: str
    rows: tuple[dict[str, Any], ...]
    reproduced: bool
    what: str

    @property
    def exit_code(self) -> int:
        """1 when the counterexample is reproduced (the claim stays refuted), else 2."""
        return 1 if self.reproduced else 2

    def table(self) -> str:
        """The rows as text, and the conclusion."""
        lines = [f"{'item':<28} {'number':<16} {'recorded':>12} {'recomputed':>12}  ok"]
        for r in self.rows:
            lines.append(
                f"{r['item']:<28} {r['number']:<16} {_g(r['recorded']):>12} {_g(r['recomputed']):>12}  "
                + ("yes" if r["ok"] else "NO")
            )
        verdict = "reproduced" if self.reproduced else "NOT reproduced"
        lines.append(f"{self.claim}: the saved counterexample is {verdict}: {self.what}")
        return "\n".join(lines)


def _row(item: str, number: str, recorded: Any, recomputed: Any, ok: bool) -> dict[str, Any]:
    return {"item": item, "number": number, "recorded": recorded, "recomputed": recomputed, "ok": bool(ok)}


def _g(x: Any) -> str:
    return f"{x:.6g}" if isinstance(x, (int, float)) and not isinstance(x, bool) else str(x)


def _num(x: Any) -> float:
    if isinstance(x, str) and x in ("inf", "-inf", "nan"):
        return float(x)
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise UserInputError(f"FILE: expected a recorded number, got {x!r:.80}")
    return float(x)


def _close(a: float, b: float, rtol: float = VALUE_RTOL) -> bool:
    return a == b or abs(a - b) <= rtol * max(1.0, abs(a), abs(b))


def _how_to_read(cx: Counterexample) -> str:
    return f"read it with verify.counterexample.load_counterexample({cx.path!r})"


def replay_counterexample(cx: Counterexample) -> Replay:
    """Recompute a ``nonlinear`` or ``attention`` counterexample's numbers (module docstring).

    A file that cannot be replayed (a problem not from the catalog, a record without the numbers,
    a head of an unknown claim) raises :class:`~theory.errors.UserInputError` saying what it holds.
    """
    if cx.kind == "nonlinear":
        return _nonlinear(cx)
    if cx.kind == "attention":
        return _attention(cx)
    raise UserInputError(f"FILE: a {cx.kind!r} counterexample is replayed by the audit of its problem")


# --------------------------------------------------------------------------------------------------
# [KKR25] end points


def _rebuild_nonlinear(cx: Counterexample) -> Any:
    from landscapes.catalog import KKR_PROBLEMS, NONLINEAR_BUILDERS
    from verify.kkr.training import problem_fingerprint, same_problem

    src = cx.source or {}
    cat = src.get("catalog")
    name = src.get("name")
    if not isinstance(cat, dict):
        raise UserInputError(
            f"FILE: a 'nonlinear' counterexample of {cx.claim} on the problem {name!r}, which is not an "
            f"entry of landscapes.catalog.KKR_PROBLEMS: it cannot be rebuilt to replay; {_how_to_read(cx)}"
        )
    entry = cat.get("name")
    if entry not in KKR_PROBLEMS:
        raise UserInputError(
            f"FILE: source.catalog.name: expected one of {', '.join(KKR_PROBLEMS)}, got {entry!r:.80}"
        )
    spec = KKR_PROBLEMS[entry]
    kwargs = cat.get("kwargs")
    # Only the weight decay may differ from the entry (an experiment's override): no other argument
    # of a builder comes from the file.
    if (
        not isinstance(kwargs, dict)
        or cat.get("builder") != spec["builder"]
        or set(kwargs) != set(spec["kwargs"])
        or any(kwargs[k] != v for k, v in spec["kwargs"].items() if k != "lam")
        or (
            "lam" in kwargs
            and not (isinstance(kwargs["lam"], (int, float)) and 0 <= kwargs["lam"] < math.inf)
        )
    ):
        raise UserInputError(
            f"FILE: source.catalog: expected the builder and arguments of the entry {entry!r} (only 'lam' "
            f"may differ), got {cat!r:.200}"
        )
    if not isinstance(name, str):
        raise UserInputError(f"FILE: source.name: expected the problem's name, got {name!r:.80}")
    problem = NONLINEAR_BUILDERS[spec["builder"]](**kwargs)
    problem = dataclasses.replace(problem, name=name)
    fp = src.get("fingerprint")
    if not isinstance(fp, Mapping) or not same_problem(fp, problem_fingerprint(problem)):
        raise UserInputError(
            f"FILE: source.fingerprint: expected the fingerprint of the rebuilt {entry!r} problem, got "
            f"another ({fp!r:.200}); {_how_to_read(cx)}"
        )
    return problem


def _blocks(
    cx: Counterexample, prefix: str, n: int, shapes: list[tuple[int, int]] | None
) -> tuple[Tensor, ...]:
    out = []
    for j in range(n):
        key = f"{prefix}{j}"
        if key not in cx.arrays:
            raise UserInputError(
                f"FILE: array {key!r}: expected one of {prefix}0..{prefix}{n - 1}, got nothing"
            )
        a = cx.arrays[key]
        if a.ndim != 2 or (shapes is not None and a.shape != shapes[j]):
            want = "a matrix" if shapes is None else f"shape {shapes[j]}"
            raise UserInputError(f"FILE: array {key!r}: expected {want}, got shape {a.shape}")
        out.append(torch.from_numpy(a.astype("float64", copy=True)))
    return tuple(out)


def _nonlinear(cx: Counterexample) -> Replay:
    from landscapes.curvature.vectors import flatten_factors

    problem = _rebuild_nonlinear(cx)
    rec = cx.record or {}
    points = rec.get("points")
    ref = rec.get("reference")
    if not isinstance(points, list) or not points or not isinstance(ref, dict):
        raise UserInputError(
            f"FILE: record: expected the end points and the reference, got keys {sorted(rec)}; "
            + _how_to_read(cx)
        )
    n = len(problem.blocks)
    rows: list[dict[str, Any]] = []
    g0 = math.sqrt(sum(float(x.pow(2).sum()) for x in problem.grad(problem.zeros())))
    Xref = _blocks(cx, "REF.X", n, [tuple(b) for b in problem.blocks])
    ref_new = problem.penalized(Xref)
    ref_old = _num(ref.get("value"))
    rows.append(_row("reference X*", "penalized", ref_old, ref_new, _close(ref_old, ref_new)))
    for i, pt in enumerate(points):
        if not isinstance(pt, dict):
            raise UserInputError(f"FILE: record.points[{i}]: expected a JSON object, got {pt!r:.80}")
        item = f"end point {pt.get('init')}/{pt.get('seed')}"
        if f"P{i}.A0" in cx.arrays:
            A = _blocks(cx, f"P{i}.A", n, None)
            B = _blocks(cx, f"P{i}.B", n, None)
            try:
                f, gA, gB = problem.lora_value_and_grad(A, B)
            except (ValueError, RuntimeError) as exc:
                raise UserInputError(
                    f"FILE: arrays P{i}.A*, P{i}.B*: expected factors of the problem ({exc})"
                ) from None
            X = tuple(a @ b.T for a, b in zip(A, B))
            gn = float(flatten_factors(gA, gB).norm())
            grad_rtol = float((pt.get("tolerances") or {}).get("grad_rtol", 1e-6))
            for number, old, new in (
                ("objective", pt.get("objective"), f),
                ("grad_norm", pt.get("grad_norm"), gn),
            ):
                if old is None:
                    continue
                o = _num(old)
                ok = abs(o - new) <= grad_rtol * (g0 or 1.0) if number == "grad_norm" else _close(o, new)
                rows.append(_row(item, number, o, new, ok))
        else:
            X = _blocks(cx, f"P{i}.X", n, [tuple(b) for b in problem.blocks])
        new = problem.penalized(X)
        old = _num(pt.get("penalized"))
        rows.append(_row(item, "penalized", old, new, _close(old, new)))
        if "excess" in pt:
            o = _num(pt["excess"])
            rows.append(_row(item, "excess over X*", o, new - ref_new, _close(o, new - ref_new, 1e-6)))
    ok = all(r["ok"] for r in rows)
    what = (
        f"{len(points)} end point(s) of {problem.name!r} recomputed on the rebuilt problem "
        f"({(cx.source or {}).get('catalog', {}).get('name')!r} of landscapes.catalog); the checker's "
        "regime numbers (constants, bounds) are in the record, not recomputed"
    )
    return Replay(cx.claim, cx.kind, tuple(rows), ok, what)


# --------------------------------------------------------------------------------------------------
# [HSK24] heads


def _head(cx: Counterexample) -> Any:
    from landscapes.attention import AttentionLoRA

    a = cx.arrays

    def t(key: str) -> Tensor:
        if key not in a:
            raise UserInputError(f"FILE: array {key!r}: expected the head's {key}, got nothing")
        return torch.from_numpy(a[key].astype("float64", copy=True))

    adapted = sorted(k[2:] for k in a if k.startswith("A_"))
    sb = t("scale_beta")
    if sb.shape != (2,):
        raise UserInputError(f"FILE: array 'scale_beta': expected shape (2,), got {tuple(sb.shape)}")
    return AttentionLoRA(
        t("X"),
        t("Y"),
        {k: t(f"W_{k}") for k in "QKV"},
        {k: t(f"A_{k}") for k in adapted},
        {k: t(f"B_{k}") for k in adapted},
        scale=float(sb[0]),
        beta=float(sb[1]),
    )


def _attention(cx: Counterexample) -> Replay:
    from landscapes.attention import HskSetting, exact_gradients, fast_gradients, score_gradient
    from verify.hsk import checkers as hsk

    h = _head(cx)
    rec, opts = cx.record or {}, cx.options
    L, d = h.X.shape
    item = f"head L={L} d={d}"
    if "error" in rec and "rtol" in opts:  # HSK-exact
        ref = hsk.autograd_gradients(h)
        err = max(
            hsk._grad_error(exact_gradients(h), ref),
            hsk._grad_error(exact_gradients(h, block_size=max(1, L // 3)), ref),
        )
        if opts.get("variant") == "printed" and "Q" in h.A and L == d == h.A["Q"].shape[0]:
            bad = hsk._printed_b_gradient(h, score_gradient(h))
            printed = float((bad - ref[2]["Q"]).abs().max()) / max(float(ref[2]["Q"].abs().max()), 1e-300)
            err = max(err, printed if math.isfinite(printed) else math.inf)
        rtol = _num(opts["rtol"])
        rows: tuple[dict[str, Any], ...] = (
            _row(item, "max rel error", _num(rec["error"]), err, not err <= rtol),
        )
        return Replay(cx.claim, cx.kind, rows, not err <= rtol, f"error vs autograd above rtol = {rtol:g}")
    if "degree" in rec and "gamma" in rec and "bound_factor" in opts:  # HSK-poly-error
        src = cx.source or {}
        try:
            setting = HskSetting(
                case=src["case"], d=src["d"], r=src["r"], beta=src["beta"], seed=src["seed"], name=src["name"]
            )
        except (KeyError, TypeError) as exc:
            raise UserInputError(
                f"FILE: source: expected the HskSetting's fingerprint, got {src!r:.200} ({exc})"
            ) from None
        ((row, ratio),) = hsk._poly_rows(
            setting, h, _num(rec["gamma"]), [int(rec["degree"])], _num(opts["bound_factor"])
        )
        old_err, new_err = _num(rec["max_entry_error"]), row["max_entry_error"]
        rows = (
            _row(item, "max entry error", old_err, new_err, _close(old_err, new_err, 1e-6)),
            _row(item, "error/allowed", _num(rec["error_over_allowed"]), ratio, ratio > 1),
        )
        return Replay(
            cx.claim, cx.kind, rows, ratio > 1, f"degree {rec['degree']}: the entry error exceeds the bound"
        )
    if "best_error" in rec and "target" in opts and "max_degree" in opts:  # the planted HSK-below variant
        target, max_degree = _num(opts["target"]), int(opts["max_degree"])
        exact = exact_gradients(h, block_size=hsk._auto_block(L))
        errors = []
        for g in range(max_degree + 1):
            try:
                f = fast_gradients(h, degree=g)
            except ValueError:
                continue
            errors.append(hsk._grad_error_abs((f.loss, f.grad_A, f.grad_B), exact))
        best = min(errors, default=math.inf)
        rows = (_row(item, "best abs error", _num(rec["best_error"]), best, not best <= target),)
        return Replay(
            cx.claim, cx.kind, rows, not best <= target, f"no degree <= {max_degree} meets target {target:g}"
        )
    raise UserInputError(
        f"FILE: an 'attention' counterexample of {cx.claim} whose record ({sorted(rec)}) and options "
        f"({sorted(opts)}) name no refuting inequality this replay knows; {_how_to_read(cx)}"
    )
