"""Replaying a saved counterexample that is not a problem file: [KKR25] end points, an [HSK24] head.

A ``problem`` counterexample (:mod:`verify.counterexample`) is a problem file, and ``loracheck
audit`` re-runs its checker (:func:`verify.run.audits.replay_options`).  The other kinds hold what
the checker judged, not all of its evidence, so :func:`replay_counterexample` re-establishes the
refutation from the saved arrays with the checker's own rules and the file's options:

* the file is checked first (a :class:`~theory.errors.UserInputError` naming the file's key, exit
  3): the claim must be one whose checker writes the file's kind (:data:`REPLAYED`); the stored
  options are validated with the checker's option specs (:mod:`verify.options`, as a replayed
  problem file's are); the record's numbers and the source are checked against the arrays; the
  arrays must be finite; a head beyond the checker's limits or the memory budget
  (:func:`landscapes.io.memory_budget`) is refused before anything is allocated.
* ``nonlinear`` (KKR-dichotomy, KKR-special, KKR-loud): the problem is rebuilt from its catalog
  entry (:data:`landscapes.catalog.KKR_PROBLEMS`, checked against the saved fingerprint); every
  saved end point is classified again by the checker's code
  (:func:`landscapes.nonlinear.sosp.end_point`: gradient norm within ``grad_rtol * ||grad L(0)||``
  at the checker's ``grad_rtol``, the curvature certificate; :func:`verify.kkr.training.classify`:
  its excess over the reference ``X*`` above the global tolerance at the file's ``global_rtol``),
  and must refute the claim as the checker requires (a certified spurious SOSP within the radius;
  for the planted variants a rank above ``r*`` or a norm above ``2 ||X*||_F``).  The regime
  numbers (constants, bounds, predictions) are the record's, not recomputed.
* ``attention`` (HSK-exact, HSK-poly-error, HSK-below): the head is rebuilt from its arrays and the
  refuting inequality re-evaluated with the checker's own code: the exact gradients' error against
  autograd over ``rtol`` (HSK-exact), the Taylor entry error over its allowance (HSK-poly-error),
  no degree within ``max_degree`` meeting ``target`` (the planted HSK-below variants).

Besides, the recorded numbers must agree with the recomputed ones (relative to their scale).  A
non-finite evaluation reproduces nothing.  Exit 1: every row holds (the claim stays refuted); 2:
some row does not.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from theory.errors import UserInputError, finite_number, shown
from verify.counterexample import Counterexample

__all__ = ["REPLAYED", "Replay", "replay_counterexample"]

#: Relative agreement of recomputed values with the recorded ones (round-off, thread counts).
VALUE_RTOL = 1e-9
#: Relative agreement of recomputed errors (differences of round-off-sized numbers) with the record.
ERROR_RTOL = 1e-6
#: The claims whose checkers write each kind of counterexample this module replays.
REPLAYED: Mapping[str, tuple[str, ...]] = {
    "nonlinear": ("KKR-dichotomy", "KKR-special", "KKR-loud"),
    "attention": ("HSK-exact", "HSK-poly-error", "HSK-below"),
}


@dataclass(frozen=True)
class Replay:
    """The recomputed numbers of a counterexample: one row per number, and whether all hold."""

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
        lines = [f"{'item':<28} {'number':<26} {'recorded':>12} {'recomputed':>12}  ok"]
        for r in self.rows:
            lines.append(
                f"{r['item']:<28} {r['number']:<26} {_g(r['recorded']):>12} {_g(r['recomputed']):>12}  "
                + ("yes" if r["ok"] else "NO")
            )
        verdict = "reproduced" if self.reproduced else "NOT reproduced"
        lines.append(f"{self.claim}: the saved counterexample is {verdict}: {self.what}")
        return "\n".join(lines)


def _replay(cx: Counterexample, rows: list[dict[str, Any]], what: str) -> Replay:
    # the decision is the ok column: every row holds
    return Replay(cx.claim, cx.kind, tuple(rows), bool(rows) and all(r["ok"] for r in rows), what)


def _row(item: str, number: str, recorded: Any, recomputed: Any, ok: bool) -> dict[str, Any]:
    return {"item": item, "number": number, "recorded": recorded, "recomputed": recomputed, "ok": bool(ok)}


def _g(x: Any) -> str:
    return f"{x:.6g}" if isinstance(x, (int, float)) and not isinstance(x, bool) else str(x)


def _bad(key: str, expected: str, got: Any) -> UserInputError:
    return UserInputError(f"FILE: key {key!r}: expected {expected}, got {got}")


def _num(x: Any, key: str) -> float:
    """A recorded number (``"inf"``, ``"-inf"``, ``"nan"``: the JSON spelling of the writer)."""
    if isinstance(x, str) and x in ("inf", "-inf", "nan"):
        return float(x)
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not finite_number(x):
        raise _bad(key, "a recorded number", "nothing" if x is None else shown(x))
    return float(x)


def _finite(x: Any, key: str, *, positive: bool = False) -> float:
    """A finite recorded number (``> 0`` with ``positive``)."""
    v = _num(x, key)
    if not math.isfinite(v) or (positive and not v > 0):
        raise _bad(key, "a positive finite number" if positive else "a finite number", shown(x))
    return v


def _int(x: Any, key: str, lo: int, hi: int) -> int:
    if isinstance(x, bool) or not isinstance(x, int) or not lo <= x <= hi:
        raise _bad(key, f"an int in [{lo}, {hi}]", "nothing" if x is None else shown(x))
    return x


def _close(a: float, b: float, rtol: float = VALUE_RTOL) -> bool:
    """Agreement relative to the numbers' own scale (no absolute floor)."""
    return a == b or abs(a - b) <= rtol * max(abs(a), abs(b))


def _how_to_read(cx: Counterexample) -> str:
    return f"read it with verify.counterexample.load_counterexample({cx.path!r})"


def replay_counterexample(cx: Counterexample) -> Replay:
    """Re-establish a ``nonlinear`` or ``attention`` counterexample's refutation (module docstring).

    A file that cannot be replayed (a claim whose checker writes no such file, options outside the
    checker's ranges, a record or source that does not fit the arrays, non-finite arrays, a head
    beyond the limits, a problem not from the catalog) raises :class:`~theory.errors.UserInputError`
    naming the key.
    """
    if cx.kind not in REPLAYED:
        raise UserInputError(f"FILE: a {cx.kind!r} counterexample is replayed by the audit of its problem")
    _check_claim(cx)
    for key in sorted(cx.arrays):
        a = cx.arrays[key]
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            bad = int(a.size - np.isfinite(a).sum())
            raise _bad(f"arrays.{key}", "finite numbers", f"{bad} non-finite entries")
    opts = _options(cx)
    if cx.kind == "nonlinear":
        return _nonlinear(cx, opts)
    return _attention(cx, opts)


def _check_claim(cx: Counterexample) -> None:
    from verify.registry import CHECKERS

    known = REPLAYED[cx.kind]
    if cx.claim not in CHECKERS or cx.claim not in known:
        what = "a claim of theory.claims" if cx.claim not in CHECKERS else "another claim"
        raise _bad(
            "claim",
            f"a claim whose checker writes {cx.kind!r} counterexamples ({', '.join(known)})",
            f"{shown(cx.claim)} ({what})",
        )


def _options(cx: Counterexample) -> dict[str, Any]:
    """The stored options the checker declares, validated with its specs (:mod:`verify.options`).

    Options that take objects are descriptions and others are derived values the checker records:
    neither is used.  KKR files also hold the evidence's options (``collect``'s fields).
    """
    from verify.kkr.evidence import COLLECT_OPTIONS
    from verify.options import OPTION_SPECS, Opaque

    specs = dict(OPTION_SPECS[cx.claim])
    if cx.kind == "nonlinear":
        specs = {**COLLECT_OPTIONS.fields, **specs}
    out: dict[str, Any] = {}
    for name, value in cx.options.items():
        spec = specs.get(name)
        if spec is None or isinstance(spec, Opaque):
            continue
        try:
            spec.check(value, f"FILE: key 'options.{name}'")
        except UserInputError as exc:
            raise type(exc)(f"{exc} (the checker's range for {cx.claim} option {name})") from None
        out[name] = value
    return out


def _opt(opts: Mapping[str, Any], name: str) -> Any:
    if name not in opts:
        raise _bad(f"options.{name}", "the checker's option (the checker stores it)", "nothing")
    return opts[name]


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
            f"FILE: key 'source.catalog': a 'nonlinear' counterexample of {cx.claim} on the problem "
            f"{name!r:.80}, which is not an entry of landscapes.catalog.KKR_PROBLEMS: it cannot be rebuilt "
            f"to replay; {_how_to_read(cx)}"
        )
    entry = cat.get("name")
    if not isinstance(entry, str) or entry not in KKR_PROBLEMS:
        raise _bad("source.catalog.name", f"one of {', '.join(KKR_PROBLEMS)}", f"{entry!r:.80}")
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
            and not (
                isinstance(kwargs["lam"], (int, float))
                and not isinstance(kwargs["lam"], bool)
                and finite_number(kwargs["lam"])
                and 0 <= kwargs["lam"] < math.inf
            )
        )
    ):
        raise UserInputError(
            f"FILE: key 'source.catalog': expected the builder and arguments of the entry {entry!r} (only "
            f"'lam' may differ), got {cat!r:.200}"
        )
    if not isinstance(name, str):
        raise _bad("source.name", "the problem's name", f"{name!r:.80}")
    problem = NONLINEAR_BUILDERS[spec["builder"]](**kwargs)
    problem = dataclasses.replace(problem, name=name)
    fp = src.get("fingerprint")
    try:
        same = isinstance(fp, Mapping) and same_problem(fp, problem_fingerprint(problem))
    except (TypeError, ValueError, KeyError, OverflowError):
        same = False
    if not same:
        raise UserInputError(
            f"FILE: key 'source.fingerprint': expected the fingerprint of the rebuilt {entry!r} problem, "
            f"got another ({fp!r:.200}); {_how_to_read(cx)}"
        )
    return problem


def _blocks(
    cx: Counterexample, prefix: str, n: int, shapes: list[tuple[int, int]] | None
) -> tuple[Tensor, ...]:
    out = []
    for j in range(n):
        key = f"{prefix}{j}"
        if key not in cx.arrays:
            raise _bad(f"arrays.{key}", f"one of {prefix}0..{prefix}{n - 1}", "nothing")
        a = cx.arrays[key]
        if a.ndim != 2 or (shapes is not None and a.shape != shapes[j]):
            want = "a matrix" if shapes is None else f"shape {shapes[j]}"
            raise _bad(f"arrays.{key}", want, f"shape {a.shape}")
        out.append(torch.from_numpy(a.astype("float64", copy=True)))
    return tuple(out)


def _factors(cx: Counterexample, i: int, problem: Any, rank: int) -> tuple[tuple[Tensor, ...], ...]:
    """End point ``i`` as LoRA factors of rank ``rank``: saved, or balanced factors of a saved ``X``."""
    n = len(problem.blocks)
    shapes = [tuple(b) for b in problem.blocks]
    if f"P{i}.A0" in cx.arrays:
        A = _blocks(cx, f"P{i}.A", n, [(m, rank) for m, _ in shapes])
        B = _blocks(cx, f"P{i}.B", n, [(k, rank) for _, k in shapes])
        return A, B
    X = _blocks(cx, f"P{i}.X", n, shapes)  # type: ignore[arg-type]
    A_, B_ = [], []
    for j, x in enumerate(X):
        U, s, Vh = torch.linalg.svd(x, full_matrices=False)
        if s.numel() > rank and float(s[rank]) > 1e-12 * float(s[0]):
            raise _bad(f"arrays.P{i}.X{j}", f"a matrix of rank <= record.rank = {rank}", "a higher rank")
        k = min(rank, s.numel())
        root = s[:k].sqrt()
        a = torch.zeros(x.shape[0], rank, dtype=x.dtype)
        b = torch.zeros(x.shape[1], rank, dtype=x.dtype)
        a[:, :k], b[:, :k] = U[:, :k] * root, Vh[:k].T * root
        A_.append(a)
        B_.append(b)
    return tuple(A_), tuple(B_)


def _nonlinear(cx: Counterexample, opts: Mapping[str, Any]) -> Replay:
    from landscapes.nonlinear.sosp import Factors, end_point
    from verify.kkr.training import DENSE_MAX, classify, global_tolerance

    problem = _rebuild_nonlinear(cx)
    rec = cx.record or {}
    points, ref = rec.get("points"), rec.get("reference")
    if not isinstance(points, list) or not points:
        raise _bad("record.points", "a non-empty list of the end points", f"{rec.get('points')!r:.80}")
    if not isinstance(ref, dict):
        raise _bad("record.reference", "the reference's numbers (a JSON object)", f"{ref!r:.80}")
    shapes = [tuple(b) for b in problem.blocks]
    rank = _int(rec.get("rank"), "record.rank", 1, max(m + n for m, n in shapes))
    radius = _finite(rec.get("radius"), "record.radius", positive=True)
    global_rtol = float(_opt(opts, "global_rtol"))
    variant = opts.get("variant", "theorem")
    dense_max = int(opts.get("dense_max", DENSE_MAX))
    # The checker's own SOSP tolerances: end_point's defaults (kkr_run passes none of them).
    defaults = inspect.signature(end_point).parameters
    grad_rtol = float(defaults["grad_rtol"].default)
    rank_rtol = float(defaults["rank_rtol"].default)

    rows: list[dict[str, Any]] = []
    g0 = math.sqrt(sum(float(x.pow(2).sum()) for x in problem.grad(problem.zeros())))
    gscale = g0 if g0 > 0 else 1.0
    Xref = _blocks(cx, "REF.X", len(shapes), shapes)  # type: ignore[arg-type]
    ref_new = problem.penalized(Xref)
    ref_old = _num(ref.get("value"), "record.reference.value")
    x_star = math.sqrt(sum(float(x.pow(2).sum()) for x in Xref))
    ref_rank = max(
        (int((s > rank_rtol * s[0]).sum()) if float(s[0]) > 0 else 0)
        for s in (torch.linalg.svdvals(x) for x in Xref)
    )
    depth = max(problem.value(problem.zeros()) - ref_new, 0.0)
    tol = global_tolerance(ref_new, global_rtol=global_rtol, depth=depth)
    rows.append(_row("reference X*", "penalized", ref_old, ref_new, _close(ref_old, ref_new)))
    if "rank" in ref:
        r_old = _int(ref["rank"], "record.reference.rank", 0, 1 << 30)
        rows.append(_row("reference X*", "rank", r_old, ref_rank, r_old == ref_rank))
    if not math.isfinite(ref_new):
        rows.append(_row("reference X*", "finite penalized value", None, ref_new, False))
    for i, pt in enumerate(points):
        key = f"record.points[{i}]"
        if not isinstance(pt, dict):
            raise _bad(key, "a JSON object", f"{pt!r:.80}")
        item = f"end point {str(pt.get('init'))[:20]}/{str(pt.get('seed'))[:8]}"
        A, B = _factors(cx, i, problem, rank)
        try:
            ep = end_point(problem, Factors(A, B), dense_max=dense_max)
        except (ValueError, RuntimeError) as exc:
            raise _bad(f"arrays.P{i}.*", "factors of the problem", f"another shape ({exc})") from None
        certified = bool(ep.sosp and ep.lambda_min.get("lower_is_rigorous"))
        run = {"status": "finished", "sosp": ep.sosp, "penalized": ep.penalized}
        cls = classify(run, ref_new, global_rtol=global_rtol, depth=depth)
        X = tuple(a @ b.T for a, b in zip(A, B))
        distance = math.sqrt(sum(float((x - y).pow(2).sum()) for x, y in zip(X, Xref)))
        excess = ep.penalized - ref_new
        finite = all(math.isfinite(v) for v in (ep.penalized, ep.grad_norm, ep.objective, distance))
        if not finite:
            rows.append(_row(item, "finite evaluation", None, "non-finite", False))
            continue
        # The refutation, judged by the checker's rules on the recomputed numbers.
        gtol = grad_rtol * gscale
        rows.append(
            _row(
                item, f"grad_norm <= tol {gtol:.3g}", pt.get("grad_norm"), ep.grad_norm, ep.grad_norm <= gtol
            )
        )
        rows.append(_row(item, "certified SOSP", pt.get("sosp_certified"), certified, certified))
        if cx.claim == "KKR-dichotomy" and variant == "low-rank":
            top = max(ep.ranks)
            rows.append(_row(item, "rank > r* of X*", ref_rank, top, top > ref_rank))
        elif cx.claim == "KKR-loud" and variant == "quiet":
            rows.append(
                _row(item, "||X||_F > 2 ||X*||_F", 2 * x_star, ep.frobenius, ep.frobenius > 2 * x_star)
            )
            rows.append(_row(item, "distance <= radius", radius, distance, distance <= radius))
        elif cx.claim == "KKR-loud":
            # Corollary 1's prediction (rho) is the record's; the class must be the recorded one.
            recorded = pt.get("class")
            ok = cls in ("global", "spurious") and recorded in (None, cls)
            rows.append(_row(item, f"class (excess vs {tol:.3g})", recorded, cls, ok))
            rows.append(_row(item, "distance <= radius", radius, distance, distance <= radius))
        else:
            rows.append(
                _row(item, f"excess > global tol {tol:.3g}", pt.get("excess"), excess, cls == "spurious")
            )
            if cx.claim == "KKR-special" or variant == "theorem":
                rows.append(_row(item, "distance <= radius", radius, distance, distance <= radius))
        # Agreement with the record (extra rows).
        for number, new in (("objective", ep.objective), ("penalized", ep.penalized)):
            if number in pt or number == "penalized":
                old = _num(pt.get(number), f"{key}.{number}")
                rows.append(_row(item, number, old, new, _close(old, new)))
        if "grad_norm" in pt:
            old = _num(pt["grad_norm"], f"{key}.grad_norm")
            rows.append(
                _row(item, "grad_norm", old, ep.grad_norm, abs(old - ep.grad_norm) <= grad_rtol * gscale)
            )
        if "excess" in pt:
            old = _num(pt["excess"], f"{key}.excess")
            scale = max(abs(ep.penalized), abs(ref_new))
            rows.append(_row(item, "excess over X*", old, excess, abs(old - excess) <= VALUE_RTOL * scale))
        if "class" in pt and cx.claim != "KKR-loud":
            rows.append(_row(item, "class", pt["class"], cls, pt["class"] == cls))
    what = (
        f"{len(points)} end point(s) of {problem.name!r} classified again on the rebuilt problem "
        f"({(cx.source or {}).get('catalog', {}).get('name')!r} of landscapes.catalog) by the checker's "
        f"rules (global_rtol = {global_rtol:g}, grad_rtol = {grad_rtol:g}); the regime numbers "
        "(constants, bounds, predictions) are the record's, not recomputed"
    )
    return _replay(cx, rows, what)


# --------------------------------------------------------------------------------------------------
# [HSK24] heads


def _head(cx: Counterexample) -> Any:
    from landscapes.attention import AttentionLoRA

    a = cx.arrays

    def t(key: str) -> Tensor:
        if key not in a:
            raise _bad(f"arrays.{key}", f"the head's {key}", "nothing")
        return torch.from_numpy(a[key].astype("float64", copy=True))

    adapted = sorted(k[2:] for k in a if k.startswith("A_"))
    if not adapted:
        raise _bad("arrays", "the head's adapters A_<k>, B_<k>", f"none ({sorted(a)})")
    sb = t("scale_beta")
    if sb.shape != (2,):
        raise _bad("arrays.scale_beta", "shape (2,)", f"shape {tuple(sb.shape)}")
    try:
        return AttentionLoRA(
            t("X"),
            t("Y"),
            {k: t(f"W_{k}") for k in "QKV"},
            {k: t(f"A_{k}") for k in adapted},
            {k: t(f"B_{k}") for k in adapted},
            scale=float(sb[0]),
            beta=float(sb[1]),
        )
    except UserInputError as exc:
        raise UserInputError(f"FILE: key 'arrays': expected the arrays of one head ({exc})") from None


def _setting(cx: Counterexample, h: Any, *, printed: bool) -> Any:
    """The :class:`HskSetting` of the source, checked against the head's arrays.

    ``printed``: the head may be the one HSK-exact evaluates the printed formula on (``L = r = d = 2``).
    """
    from landscapes.attention import CASES, HskSetting

    src = cx.source
    if not isinstance(src, dict):
        raise _bad("source", "the HskSetting's fingerprint (a JSON object)", f"{src!r:.80}")
    fields = ("case", "d", "r", "beta", "seed", "name")
    for f in fields:
        if f not in src:
            raise _bad(f"source.{f}", "the setting's field", "nothing")
    try:
        setting = HskSetting(**{f: src[f] for f in fields})
    except (UserInputError, TypeError) as exc:
        field = str(exc).split(":", 1)[0] if ":" in str(exc) else "source"
        raise UserInputError(f"FILE: key 'source.{field}': {exc}") from None
    if src != setting.fingerprint():
        diff = sorted(
            k for k in set(src) | set(setting.fingerprint()) if src.get(k) != setting.fingerprint().get(k)
        )
        raise _bad(f"source.{diff[0]}", "the HskSetting's fingerprint", f"{src.get(diff[0])!r:.80}")
    L, d = h.X.shape
    r = {int(a.shape[0]) for a in h.A.values()}
    if set(h.A) != set(CASES[setting.case]):
        raise _bad("source.adapted", f"the head's adapted weights {sorted(h.A)}", f"{src['adapted']!r}")
    at_printed = printed and (L, d, r) == (2, 2, {2})
    if not at_printed and d != setting.d:
        raise _bad("source.d", f"the head's d = X.shape[1] = {d}", shown(setting.d))
    if not at_printed and r != {setting.r}:
        raise _bad("source.r", f"the head's rank r = {sorted(r)}", shown(setting.r))
    if float(h.beta) != float(setting.beta):
        raise _bad("source.beta", f"the head's beta = scale_beta[1] = {h.beta!r}", shown(setting.beta))
    return setting


def _cap(claim: str, option: str) -> int:
    """The largest value an int option (or each item of a list option) of ``claim`` may take."""
    from verify.options import OPTION_SPECS

    spec = OPTION_SPECS[claim][option]
    hi: Any = getattr(getattr(spec, "item", spec), "hi", None)
    return int(hi)


def _memory(claim: str, need: int) -> None:
    from landscapes.io import memory_budget

    budget = memory_budget()
    if need > budget:
        raise UserInputError(
            f"FILE: key 'arrays.X': the replay of this {claim} head needs about {need} bytes, over the "
            f"memory budget of {budget} bytes ($LORACHECK_MAX_BYTES)"
        )


def _attention(cx: Counterexample, opts: Mapping[str, Any]) -> Replay:
    rec = cx.record
    if not isinstance(rec, dict):
        raise _bad("record", "the refuting numbers (a JSON object)", f"{rec!r:.80}")
    X = cx.arrays.get("X")
    if X is None or X.ndim != 2:
        raise _bad("arrays.X", "the head's X (L x d)", "nothing" if X is None else f"shape {X.shape}")
    L, d = (int(v) for v in X.shape)
    if cx.claim == "HSK-exact":
        return _hsk_exact(cx, opts, rec, L, d)
    if cx.claim == "HSK-poly-error":
        return _hsk_poly(cx, opts, rec, L, d)
    return _hsk_below(cx, opts, rec, L, d)


def _hsk_exact(cx: Counterexample, opts: Mapping[str, Any], rec: dict[str, Any], L: int, d: int) -> Replay:
    from landscapes.attention import exact_gradients, score_gradient
    from verify.hsk import checkers as hsk

    rtol, variant = float(_opt(opts, "rtol")), _opt(opts, "variant")
    cap = _cap("HSK-exact", "lengths")
    if L > cap:
        raise _bad("arrays.X", f"a head of length L <= {cap} (the checker's limit)", f"L = {L}")
    _memory("HSK-exact", 8 * (12 * L * L + 16 * L * d + 8 * d * d))
    old = _num(rec.get("error"), "record.error")
    h = _head(cx)
    _setting(cx, h, printed=variant == "printed")
    item = f"head L={L} d={d}"
    ref = hsk.autograd_gradients(h)
    errs = [
        hsk._grad_error(exact_gradients(h), ref),
        hsk._grad_error(exact_gradients(h, block_size=max(1, L // 3)), ref),
    ]
    if variant == "printed" and "Q" in h.A and L == d == h.A["Q"].shape[0]:
        bad = hsk._printed_b_gradient(h, score_gradient(h))
        errs.append(float((bad - ref[2]["Q"]).abs().max()) / max(float(ref[2]["Q"].abs().max()), 1e-300))
    err = max(errs)
    finite = all(math.isfinite(e) for e in errs) and math.isfinite(ref[0])
    rows = [
        _row(item, f"max rel error > rtol {rtol:g}", old, err, finite and err > rtol),
        _row(item, "max rel error (record)", old, err, _close(old, err, ERROR_RTOL)),
    ]
    return _replay(cx, rows, f"error vs autograd above rtol = {rtol:g} (variant {variant!r})")


def _hsk_poly(cx: Counterexample, opts: Mapping[str, Any], rec: dict[str, Any], L: int, d: int) -> Replay:
    from verify.hsk import checkers as hsk

    bound_factor, L_opt = float(_opt(opts, "bound_factor")), _opt(opts, "L")
    degrees, gammas = _opt(opts, "degrees"), _opt(opts, "gammas")
    if L != L_opt:
        raise _bad("arrays.X", f"a head of length options.L = {L_opt}", f"L = {L}")
    degree = _int(rec.get("degree"), "record.degree", 0, _cap("HSK-poly-error", "degrees"))
    if degree not in degrees:
        raise _bad("record.degree", f"one of options.degrees {list(degrees)}", shown(degree))
    gamma = _finite(rec.get("gamma"), "record.gamma", positive=True)
    if gamma not in [float(g) for g in gammas]:
        raise _bad("record.gamma", f"one of options.gammas {list(gammas)}", shown(rec.get("gamma")))
    old_err = _num(rec.get("max_entry_error"), "record.max_entry_error")
    old_ratio = _num(rec.get("error_over_allowed"), "record.error_over_allowed")
    features = math.comb(d + degree, degree)
    _memory("HSK-poly-error", 8 * (6 * L * L + 3 * L * features + 8 * L * d))
    h = _head(cx)
    setting = _setting(cx, h, printed=False)
    item = f"head L={L} d={d}"
    try:
        ((row, ratio),) = hsk._poly_rows(setting, h, gamma, [degree], bound_factor)
    except ValueError as exc:  # a non-finite score (overflow) reaching the bound: a non-finite evaluation
        return _replay(
            cx, [_row(item, "finite evaluation", None, f"no ({exc})"[:60], False)], "not evaluated"
        )
    new_err = row["max_entry_error"]
    finite = math.isfinite(new_err) and math.isfinite(row["allowed"]) and math.isfinite(row["M"])
    rows = [
        _row(item, "error/allowed > 1", old_ratio, ratio, finite and ratio > 1),
        _row(item, "max entry error (record)", old_err, new_err, _close(old_err, new_err, ERROR_RTOL)),
    ]
    return _replay(
        cx, rows, f"degree {degree}: the entry error exceeds {bound_factor:g} x the Lagrange bound"
    )


def _hsk_below(cx: Counterexample, opts: Mapping[str, Any], rec: dict[str, Any], L: int, d: int) -> Replay:
    from landscapes.attention import exact_gradients, fast_gradients
    from verify.hsk import checkers as hsk

    target, max_degree = float(_opt(opts, "target")), int(_opt(opts, "max_degree"))
    variant, lengths = _opt(opts, "variant"), _opt(opts, "lengths")
    if variant not in ("above", "superlinear"):
        raise _bad(
            "options.variant",
            "a planted variant the checker refutes ('above', 'superlinear')",
            shown(variant),
        )
    rec_L = _int(rec.get("L"), "record.L", 1, _cap("HSK-below", "lengths"))
    if rec_L != L or L not in lengths:
        raise _bad(
            "record.L", f"the head's length L = {L}, one of options.lengths {list(lengths)}", shown(rec_L)
        )
    old = _num(rec.get("best_error"), "record.best_error")
    features = math.comb(d + max_degree, max_degree)
    block = hsk._auto_block(L)
    _memory("HSK-below", 8 * (6 * block * L + 4 * L * features + 16 * L * d))
    h = _head(cx)
    _setting(cx, h, printed=False)
    exact = exact_gradients(h, block_size=block)
    errors = []
    for g in range(max_degree + 1):
        try:
            f = fast_gradients(h, degree=g)
        except ValueError:  # the checker's rule: a non-positive normalizer, the degree fails
            continue
        errors.append(hsk._grad_error_abs((f.loss, f.grad_A, f.grad_B), exact))
    finite = all(math.isfinite(e) for e in errors) and math.isfinite(exact[0])
    best = min(errors, default=math.inf)
    item = f"head L={L} d={d}"
    rows = [_row(item, f"best abs error > target {target:g}", old, best, finite and best > target)]
    if math.isfinite(old) or math.isfinite(best):
        rows.append(_row(item, "best abs error (record)", old, best, _close(old, best, ERROR_RTOL)))
    return _replay(cx, rows, f"no degree <= {max_degree} meets target {target:g}")
