"""Reports: versioned JSON (with a published JSON Schema) and a Markdown summary.

Files are written atomically (a temporary file in the same directory, then ``os.replace``), so a
killed run leaves either the previous report or the new one, never half of one.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from landscapes.io import atomic_write_text
from landscapes.threads import record as threads_record
from theory.errors import UserInputError
from verify.checker import fmt, registered
from verify.results import ResultsFile, results_schema
from verify.terminal import printable
from verify.verdict import STATUSES, Verdict

__all__ = [
    "REPORT_FORMAT",
    "REPORT_VERSION",
    "REPORT_SCHEMA",
    "VERDICT_SCHEMA",
    "build_report",
    "write_report",
    "report_file",
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
REPORT_SCHEMA: dict[str, Any] = results_schema(
    "loracheck report",
    REPORT_FORMAT,
    REPORT_VERSION,
    required=["suite", "verdicts", "counts", "seconds"],
    properties={
        "suite": {"type": "array", "items": {"type": "object"}},
        "seconds": {"type": "number"},
        "counts": COUNTS_SCHEMA,
        "verdicts": {"type": "array", "items": VERDICT_SCHEMA},
        "record": RECORD_SCHEMA,
    },
)


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
    """Versions and thread counts, recorded in every report.

    ``threads``: what the thread policy chose in this process (:func:`landscapes.threads.record`):
    who decided, the process-wide count and how many checks ran with each count.
    """
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
        "threads": threads_record(),
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


def evidence(v: Verdict | Mapping[str, Any]) -> str:
    """The few certificate numbers that carry a verdict, as one short string.

    The line is declared with the claim's checker (:func:`verify.checker.checker`); without one,
    when it has nothing to say, or when a certificate read from a file does not have the shapes
    its checker writes, the first certificate fields are shown.
    """
    d = v.to_dict() if isinstance(v, Verdict) else dict(v)
    c, claim = d.get("certificate"), d.get("claim")
    if not isinstance(c, Mapping):
        return ""
    reg = registered().get(str(claim))
    parts: list[str] = []
    if reg is not None and reg.evidence is not None:
        try:
            parts = reg.evidence(c, d)
        except (TypeError, ValueError, KeyError, IndexError, AttributeError, OverflowError):
            # a certificate read back from a file may not have the shapes its checker writes: the
            # line falls back to the raw fields rather than failing the command
            parts = []
    if not parts:
        parts = [f"{k} {fmt(val)}" for k, val in list(c.items())[:4]]
    return ", ".join(parts)


def _record_lines(record: Any) -> list[str]:
    """The verdicts against the suite's record, for the Markdown summary (none without a record)."""
    if not isinstance(record, Mapping):
        return []
    diffs = record.get("differences") or []
    lines = [
        f"Against the suite's record: {record.get('as_recorded')} as recorded "
        f"({record.get('known_refutations')} known refutation(s), {record.get('known_inconclusive')} known "
        f"inconclusive), {len(diffs)} different.",
        "",
    ]
    for d in diffs if isinstance(diffs, list) else []:
        if isinstance(d, Mapping):
            lines.append(
                f"- {d.get('kind')}: {d.get('claim')} on {d.get('problem')} is {d.get('got')}, "
                f"recorded {d.get('expected')}"
            )
    return lines + ([""] if len(lines) > 2 else [])


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
        *_record_lines(report.get("record")),
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


def report_file(out_dir: str | os.PathLike[str]) -> ResultsFile:
    """``report.json`` in ``out_dir`` (``--out``): what ``loracheck run`` resumes and rewrites."""
    return ResultsFile(
        Path(out_dir) / "report.json",
        fmt=REPORT_FORMAT,
        version=REPORT_VERSION,
        what="--out",
        noun=None,
        hint="pass --fresh to overwrite it",
    )


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
    j = report_file(out).save(report)
    # text from input files (problem names, resumed reasons) may hold control or surrogate characters
    m = atomic_write_text(out / "report.md", printable(report_markdown(report)))
    return j, m
