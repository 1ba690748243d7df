"""Reports: versioned JSON (with a published JSON Schema) and a Markdown summary.

Files are written atomically (a temporary file in the same directory, then ``os.replace``), so a
killed run leaves either the previous report or the new one, never half of one.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from landscapes.io import atomic_write_text
from theory.errors import UserInputError
from verify.checker import registered
from verify.terminal import printable
from verify.verdict import STATUSES, Verdict

__all__ = [
    "REPORT_FORMAT",
    "REPORT_VERSION",
    "REPORT_SCHEMA",
    "VERDICT_SCHEMA",
    "build_report",
    "write_report",
    "report_markdown",
    "atomic_write_text",
    "environment",
    "exit_code",
    "evidence",
    "validate_json",
]

REPORT_FORMAT = "loracheck.report"
REPORT_VERSION = 1

#: JSON Schema of one serialized :class:`~verify.verdict.Verdict` (shared by reports and audits).
VERDICT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["claim", "status", "problem", "certificate", "reason", "timings", "options"],
    "properties": {
        "claim": {"type": "string"},
        "status": {"enum": list(STATUSES)},
        "problem": {"type": "object"},
        "certificate": {"type": "object"},
        "reason": {"type": "string"},
        "timings": {"type": "object"},
        "options": {"type": "object"},
        "counterexample": {"type": ["string", "null"]},
    },
}

#: JSON Schema of the verdicts against the suite's record (``loracheck run``; optional).
RECORD_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["as_recorded", "known_refutations", "known_inconclusive", "differences"],
    "properties": {
        "as_recorded": {"type": "integer"},
        "known_refutations": {"type": "integer"},
        "known_inconclusive": {"type": "integer"},
        "differences": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["claim", "problem", "expected", "got", "why", "kind"],
                "properties": {
                    "claim": {"type": "string"},
                    "problem": {"type": "string"},
                    "expected": {"enum": list(STATUSES)},
                    "got": {"enum": list(STATUSES)},
                    "why": {"type": "string"},
                    "kind": {"enum": ["new violation", "holds became inconclusive", "differs"]},
                },
            },
        },
    },
}

#: JSON Schema of the verdict counts per status (shared by reports and audits).
COUNTS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {s: {"type": "integer", "minimum": 0} for s in STATUSES},
    "required": list(STATUSES),
}

#: JSON Schema (draft 2020-12) of a report.
REPORT_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "loracheck report",
    "type": "object",
    "required": [
        "format",
        "version",
        "created",
        "complete",
        "environment",
        "suite",
        "verdicts",
        "counts",
        "seconds",
    ],
    "properties": {
        "format": {"const": REPORT_FORMAT},
        "version": {"const": REPORT_VERSION},
        "created": {"type": "string"},
        "complete": {"type": "boolean"},
        "environment": {"type": "object"},
        "suite": {"type": "array", "items": {"type": "object"}},
        "seconds": {"type": "number"},
        "counts": COUNTS_SCHEMA,
        "verdicts": {"type": "array", "items": VERDICT_SCHEMA},
        "record": RECORD_SCHEMA,
    },
}


_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "number": (int, float),
    "integer": (int,),
    "boolean": (bool,),
    "null": (type(None),),
}


def _json_type_ok(x: Any, name: str) -> bool:
    if name in ("number", "integer") and isinstance(x, bool):
        return False
    if name == "integer" and isinstance(x, float):
        return x.is_integer()
    return isinstance(x, _JSON_TYPES[name])


def _schema_errors(x: Any, schema: Mapping[str, Any], path: str) -> list[str]:
    """The first violations of ``schema`` by ``x`` (an empty list when it validates)."""
    if "const" in schema and not (x == schema["const"] and type(x) is type(schema["const"])):
        return [f"{path}: expected {schema['const']!r}, got {x!r}"]
    if "enum" in schema and not any(x == e and type(x) is type(e) for e in schema["enum"]):
        return [f"{path}: expected one of {schema['enum']!r}, got {x!r}"]
    if "type" in schema:
        names = [schema["type"]] if isinstance(schema["type"], str) else list(schema["type"])
        if not any(_json_type_ok(x, n) for n in names):
            return [f"{path}: expected a JSON {' or '.join(names)}, got {type(x).__name__} {_short(x)}"]
    number = isinstance(x, (int, float)) and not isinstance(x, bool)
    if "minimum" in schema and number and x < schema["minimum"]:
        return [f"{path}: expected a number >= {schema['minimum']}, got {x!r}"]
    if "oneOf" in schema:
        ok = [s for s in schema["oneOf"] if not _schema_errors(x, s, path)]
        if len(ok) != 1:
            return [f"{path}: expected exactly one of {len(schema['oneOf'])} forms, got {_short(x)}"]
    if isinstance(x, dict):
        missing = [k for k in schema.get("required", ()) if k not in x]
        if missing:
            return [f"{path}: missing {', '.join(map(repr, missing))}"]
        for k, sub in schema.get("properties", {}).items():
            if k in x:
                errs = _schema_errors(x[k], sub, f"{path}.{k}")
                if errs:
                    return errs
    if isinstance(x, list) and "items" in schema:
        for i, item in enumerate(x):
            errs = _schema_errors(item, schema["items"], f"{path}[{i}]")
            if errs:
                return errs
    return []


def _short(x: Any) -> str:
    text = repr(x)
    return text if len(text) <= 60 else text[:57] + "..."


def validate_json(data: Any, schema: Mapping[str, Any], where: str) -> None:
    """Validate ``data`` against ``schema`` (the subset of JSON Schema the published schemas use).

    Done by code (``jsonschema`` is a test extra only): ``type``, ``required``, ``properties``,
    ``items``, ``enum``, ``const``, ``oneOf`` and ``minimum``.  The first violation raises
    :class:`~theory.errors.UserInputError` naming ``where`` and the JSON path, e.g. ``json
    out.json: $.verdicts[0]: missing 'status'``.
    """
    errs = _schema_errors(data, schema, "$")
    if errs:
        raise UserInputError(f"{where}: expected data that validate against the JSON schema, got {errs[0]}")


def environment() -> dict[str, Any]:
    """Versions and thread counts, recorded in every report."""
    from importlib.metadata import PackageNotFoundError, version

    import numpy
    import scipy
    import torch

    try:
        own = version("loracheck")
    except PackageNotFoundError:  # running from a source tree
        own = "source"
    return {
        "loracheck": own,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
    }


def build_report(
    verdicts: Sequence[Verdict],
    *,
    suite: Iterable[Mapping[str, Any]] = (),
    seconds: float = 0.0,
    complete: bool = True,
    record: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Assemble the report dictionary (see :data:`REPORT_SCHEMA`).

    ``complete=False`` marks a report written while the run is still going (after each verdict,
    so a killed run keeps every finished verdict).  ``record``: the verdicts against the suite's
    record (:func:`verify.run.record.record_summary`), when the run compared them.
    """
    counts = {s: sum(v.status == s for v in verdicts) for s in STATUSES}
    extra = {"record": dict(record)} if record is not None else {}
    return {
        "format": REPORT_FORMAT,
        "version": REPORT_VERSION,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "complete": bool(complete),
        "environment": environment(),
        "suite": [dict(s) for s in suite],
        "seconds": float(seconds),
        "counts": counts,
        "verdicts": [v.to_dict() for v in verdicts],
        **extra,
    }


def exit_code(verdicts: Sequence[Verdict]) -> int:
    """0 all hold, 1 some violated, 2 some inconclusive (and none violated)."""
    if any(v.status == "violated" for v in verdicts):
        return 1
    if any(v.status == "inconclusive" for v in verdicts):
        return 2
    return 0


def _fmt(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:.3g}" if 1e-3 <= abs(x) < 1e4 else f"{x:.1e}"
    if isinstance(x, (list, tuple)):
        return "[" + ", ".join(_fmt(v) for v in x) + "]"
    return str(x)


def _gap(x: Any) -> str:
    """A relative duality gap, with what a negative one (primal below dual) means.

    Slightly negative is rounding; below -1e-6 it is more than rounding (the bounds are lost).
    """
    v = _num(x)
    if v < -1e-6:
        return f"{v:.1e} (< 0 beyond round-off: bounds not trusted)"
    return f"{v:.1e} (< 0: round-off)" if v < 0 else _fmt(x)


def _num(x: Any) -> float:
    """A certificate number back from JSON (non-finite floats are stored as strings)."""
    if isinstance(x, (int, float)):
        return float(x)
    if isinstance(x, str) and x in ("inf", "-inf", "nan"):
        return float(x)
    return math.nan


def evidence(v: Verdict | Mapping[str, Any]) -> str:
    """The few certificate numbers that carry a verdict, as one short string.

    The line is declared with the claim's checker (:func:`verify.checker.checker`).
    """
    d = v.to_dict() if isinstance(v, Verdict) else dict(v)
    c, claim = d["certificate"], d["claim"]
    reg = registered().get(claim)
    if reg is not None:
        parts = reg.evidence(c, d) if reg.evidence is not None else []
        if not parts:
            parts = [f"{k} {_fmt(val)}" for k, val in list(c.items())[:4]]
        return ", ".join(parts)
    parts = []
    if claim in ("JLR-rank-NUC", "JLR-rank-blocks"):
        for k, label in (
            ("ranks", "rank"),
            ("r_max", "r_max"),
            ("block_triangular_sum", "sum r(r+1)/2"),
            ("KN", "KN"),
            ("rel_gap_reduced", "rel gap"),
        ):
            if k in c:
                parts.append(f"{label} {_gap(c[k]) if 'gap' in k else _fmt(c[k])}")
    elif claim == "JLR-rank-FT":
        for k, label in (
            ("ranks_before", "rank before"),
            ("ranks", "rank"),
            ("r_max", "r_max"),
            ("prediction_residual", "pred. resid"),
            ("grad_norm", "|grad|"),
        ):
            if k in c:
                parts.append(f"{label} {_fmt(c[k])}")
    elif claim == "JLR-equiv":
        for k, label in (
            ("rank", "r"),
            ("nuc_ranks", "NUC rank"),
            ("lora_excess", "LoRA-NUC"),
            ("identity_residual", "identity"),
            ("imbalance_rel", "imbalance"),
        ):
            if k in c:
                parts.append(f"{label} {_fmt(c[k])}")
    elif claim == "JLR-gen" and "bound" in c:
        parts.append(f"bound {_fmt(c['bound'])} (B {_fmt(c.get('B'))})")
        held = _fmt(c.get("test_clipped_loss"))
        parts.append(f"held-out {held} (UCL {_fmt(c.get('test_ucl'))}, M {c.get('M')})")
        parts.append(f"trivial {_fmt(c.get('trivial_test_clipped_loss'))}")
    elif claim == "JLR-zero-saddle":
        for k, label in (
            ("dense_lambda_min", "eigh"),
            ("predicted", "lam-|S|op"),
            ("abs_error", "err"),
            ("eigen_residual", "resid"),
        ):
            if k in c:
                parts.append(f"{label} {_fmt(c[k])}")
    elif claim == "JLR-no-spurious" and "runs" in c:
        runs = c["runs"]
        stat = [r for r in runs if r.get("stationary")]
        parts.append(f"r {_fmt(c.get('ranks'))}, KN {c.get('KN')}")
        parts.append(f"{c.get('n_certified_global')}/{len(runs)} approx. SOSPs certified global")
        if c.get("n_approximate_counterexamples"):
            parts.append(f"{c['n_approximate_counterexamples']} approx. counterexamples (no exact one)")
        if "counterexample_run" in c:
            t = runs[c["counterexample_run"]].get("counterexample_test", {})
            parts.append(f"exact local min {_fmt(t.get('margin'))} above the optimum")
        bounds = [_num(r.get("gap_bound")) for r in stat]
        if bounds:
            parts.append(f"max gap bound {_fmt(max(bounds))}")
        lows = [_num(r["lambda_min"][0]) for r in stat if r.get("lambda_min")]
        if lows:
            parts.append(f"min lambda_min >= {_fmt(min(lows))}")
        parts.append(f"{c.get('stacked_rank_deficient')} rank-deficient [U;V]")
    elif claim == "JLR-spurious-below" and "runs" in c:
        tests = [r["counterexample_test"] for r in c["runs"] if "counterexample_test" in r]
        exact = [_num(t["margin"]) for t in tests if t.get("certified")]
        parts.append(f"r {_fmt(c.get('ranks'))}, KN {c.get('KN')}")
        parts.append(f"{c.get('n_certified_sosp')}/{len(c['runs'])} approx. SOSPs")
        parts.append(f"{len(c.get('distinct_sosp_objectives', []))} distinct objectives")
        if exact:
            parts.append(f"{len(exact)} exact spurious local minima, worst excess >= {_fmt(max(exact))}")
        if len(tests) > len(exact):
            parts.append(f"{len(tests) - len(exact)} approx. spurious (no exact one certified)")
    elif claim == "JLR-gd" and "runs" in c:
        by: dict[str, float] = {}
        for r in c["runs"]:
            by[r["optimizer"]] = max(by.get(r["optimizer"], -math.inf), _num(r.get("final_gap")))
        parts = [f"{o} gap {_fmt(g)}" for o, g in by.items()]
    elif claim == "WYL-first-step" and "pipeline" in c:
        for b in c.get("blocks", []):
            parts.append(
                f"pipeline rel err {_fmt(b.get('rel_error'))} vs tol {_fmt(b.get('tolerance'))} "
                f"(gap {_fmt(b.get('gap'))}, eps {_fmt(b.get('eps'))})"
            )
    elif claim == "WYL-first-step" and "inits" in c:
        init = d.get("options", {}).get("init", "loraga")
        mine = c["inits"].get(init, [])
        errs = [_num(r.get("predicted_scale_rel_error", r.get("best_scale_rel_error"))) for r in mine]
        if errs:
            parts.append(f"{init} first step vs -lr zeta G_[2r]: rel err {_fmt(max(errs))}")
        exact = [_num(r.get("exact_step_rel_error")) for r in mine]
        if exact:
            parts.append(f"exact step {_fmt(max(exact))}")
        ey = [_num(e.get("attained_rel_error")) for e in c.get("eckart_young", [])]
        if ey:
            parts.append(f"Eckart-Young attained to {_fmt(max(ey))}")
        peft = [_num(r.get("best_scale_rel_error")) for r in c["inits"].get("loraga-peft", [])]
        if peft and init != "loraga-peft":
            parts.append(f"PEFT variant off by {_fmt(max(peft))}")
    elif claim == "WYL-directions" and "rel_difference_to_ArB2r" in c:
        worst = max(_num(x) for v in c["rel_difference_to_ArB2r"].values() for x in v)
        parts.append(f"max rel difference to ArB2r {_fmt(worst)}")
    elif claim == "WYL-unchanged":
        for k, label in (
            ("linearized_rel_max_error", "linearized"),
            ("real_float64_rel_max_error", "real float64"),
            ("real_float32_rel_max_error", "real float32"),
        ):
            if k in c:
                parts.append(f"{label} {_fmt(c[k])}")
    elif claim == "WYL-alignment" and "blocks" in c:
        parts.append("cos " + "/".join(_fmt(b.get("cosine")) for b in c["blocks"]))
        parts.append("predicted " + "/".join(_fmt(b.get("predicted")) for b in c["blocks"]))
        if all("row_projection_gap" in b for b in c["blocks"]):
            parts.append("gap " + "/".join(_fmt(b["row_projection_gap"]) for b in c["blocks"]))
        if all("about_distribution" in b for b in c["blocks"]):
            dists = [b["about_distribution"] for b in c["blocks"]]
            parts.append(
                "median cos "
                + "/".join(
                    f"{_fmt(x['median_cos'])} in [{_fmt(x['band'][0])}, {_fmt(x['band'][1])}]" for x in dists
                )
            )
    elif claim == "WYL-speed" and "steps_faster" in c:
        parts.append(f"steps {_fmt(c['steps_faster'])} vs {_fmt(c['steps_slower'])}")
        parts.append(f"median ratio {_fmt(c.get('median_ratio_slower_over_faster'))}")
        if "ratio_interval" in c:
            parts.append(f"pairs [{_fmt(c['ratio_interval'][0])}, {_fmt(c['ratio_interval'][1])}]")
    elif claim.startswith("KKR-") and "rho_hat" in c:
        ref = c.get("reference", {})
        parts.append(f"r {c.get('rank')}, r* {ref.get('rank')}, D {_fmt(c.get('radius'))}")
        parts.append(f"alpha^ {_fmt(c.get('alpha_hat'))}, beta^ {_fmt(c.get('beta_hat'))}")
        if _num(c.get("rho_lower")) > 0:
            parts.append(f"2alpha/beta in [{_fmt(c.get('rho_lower'))}, {_fmt(c.get('rho_hat'))}]")
        parts.append(f"{c.get('certified_sosps')}/{c.get('end_points')} SOSPs, {c.get('spurious')} spurious")
        if c.get("separation_ratio") is not None and claim == "KKR-loud":
            parts.append(f"separation {_fmt(c['separation_ratio'])}")
    elif claim == "KKR-magnitude" and "points" in c:
        worst = max(_num(r.get("excess")) for r in c["points"])
        parts.append(f"{len(c['points'])} points, max ||X||_* - bound {_fmt(worst)}")
    elif claim == "KKR-bias" and "table" in c:
        for init, row in c["table"].items():
            parts.append(f"{init} {row['successes']}/{row['converged']}")
    elif claim == "KKR-includes-JLR" and "forms" in c:
        for form, row in c["forms"].items():
            parts.append(f"{form}: alpha<={_fmt(row.get('alpha_hat'))} beta>={_fmt(row.get('beta_lower'))}")
    elif claim == "HSK-exact" and "timing" in c:
        parts.append(f"max err vs autograd {_fmt(c['worst_max_entry_rel_error'])}")
        parts.append(f"time ~ L^{_fmt(c['timing']['fitted_exponent'])}")
    elif claim == "HSK-poly-error" and "rows" in c:
        worst = max(_num(r["error_over_allowed"]) for r in c["rows"])
        tight = max(
            (_num(r["error_over_bound"]) for r in c["rows"] if r.get("error_over_bound") is not None),
            default=0,
        )
        parts.append(f"error/allowed <= {_fmt(worst)}, tightest error/bound {_fmt(tight)}")
        parts.append(f"{len(c['rows'])} (gamma, g)")
    elif claim == "HSK-below" and "per_length" in c:
        ranks = [r.get("rank") for r in c["per_length"]]
        parts.append(f"ranks {ranks}")
        if c.get("timing"):
            parts.append(f"time ~ L^{_fmt(c['timing']['fitted_exponent'])}")
    elif claim == "HSK-above" and "rank_exponent_by_ratio" in c:
        rows = c["rank_exponent_by_ratio"]

        def one(r: Mapping[str, Any]) -> str:
            iv = r.get("interval")
            s = f"s in [{_fmt(iv[0])}, {_fmt(iv[1])}]" if iv else f"s {_fmt(r['exponent'])}"
            return f"{r.get('family', '')} {_fmt(r['gamma_sq_over_log_L'])}: {s}".strip()

        if "consistent" in c:
            parts.append(f"consistent {c['consistent']}")
        parts.append("eps-rank ~ L^s by Gamma^2/log L: " + ", ".join(one(r) for r in rows))
    else:
        parts = [f"{k} {_fmt(val)}" for k, val in list(c.items())[:4]]
    return ", ".join(parts)


def report_markdown(report: Mapping[str, Any]) -> str:
    """A Markdown summary: counts, then one table row per verdict."""
    c = report["counts"]
    lines = [
        "# loracheck report",
        "",
        f"Created {report['created']} in {report['seconds']:.1f} s "
        f"(loracheck {report['environment'].get('loracheck')}, torch {report['environment'].get('torch')}).",
        "",
        "" if report.get("complete", True) else "*Incomplete: the run was interrupted or is still going.*\n",
        f"**{c['holds']} holds, {c['violated']} violated, {c['inconclusive']} inconclusive.**",
        "",
        "| claim | problem | status | evidence | reason |",
        "|---|---|---|---|---|",
    ]
    for v in report["verdicts"]:
        p = v["problem"]
        if "case" in p and "N" not in p:  # an attention head of [HSK24]
            prob = f"{p.get('name')} (case {p.get('case')}, d={p.get('d')}, r={p.get('r')})"
        else:
            prob = (
                f"{p.get('name')} (N={p.get('N')}, K={p.get('K')}, {p.get('loss')}, "
                f"blocks {p.get('blocks')}, lam {p.get('lam')})"
            )
        reason = v["reason"].replace("|", "\\|")
        lines.append(f"| {v['claim']} | {prob} | {v['status']} | {evidence(v)} | {reason} |")
    lines.append("")
    return "\n".join(lines)


def write_report(report: Mapping[str, Any], out_dir: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.md`` into ``out_dir``; returns both paths.

    Each file is replaced atomically.  A run killed by ``SIGKILL`` in the middle of a write can
    leave a hidden ``.report.*.tmp`` beside them (never a partial report); the next write removes
    such leftovers (one run writes a report directory at a time).
    """
    out = Path(out_dir)
    for name in ("report.json", "report.md"):
        for stale in out.glob(f".{name}.*.tmp"):
            stale.unlink(missing_ok=True)
    j = atomic_write_text(out / "report.json", json.dumps(report, indent=1, allow_nan=False) + "\n")
    # text from input files (problem names, resumed reasons) may hold control or surrogate characters
    m = atomic_write_text(out / "report.md", printable(report_markdown(report)))
    return j, m
