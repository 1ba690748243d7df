"""Validation of saved results before anything is drawn: every field the figures read.

Saved results handed back in are input: a file may be forged or damaged.  :func:`check_result`
walks exactly the fields that :mod:`figures.gallery` and the figure functions read (types, shapes,
finite numbers of a drawable size) and refuses anything else with
:class:`~theory.errors.UserInputError` naming the field as a path, e.g.
``result['verdicts'][0]['certificate']: expected a JSON object, got [1, 2]``.  After it passes,
drawing raises no ``KeyError``, ``TypeError`` or ``AttributeError`` on the data.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterator, Mapping
from typing import Any, NoReturn

from figures.spectrum import RANK_CLAIMS
from theory.errors import InputTypeError, UserInputError, finite_number, shown
from theory.fileformat import saved_format as read_format

__all__ = [
    "check_result",
    "check_format",
    "finished_entry",
    "saved_format",
    "MAX_MAGNITUDE",
    "FORMAT_VERSIONS",
    "REPORT_FORMAT",
    "PHASE_FORMAT",
    "EXPERIMENT_FORMAT",
    "SLICES_FORMAT",
    "SPEED_FORMAT",
    "KKR_FORMAT",
]

#: The formats the figures draw (``"format": "loracheck.<kind>"``, ``"version": <int>``, as every
#: results file of loracheck; see :mod:`verify.results`), and the version of each that they read.
REPORT_FORMAT = "loracheck.report"
PHASE_FORMAT = "loracheck.phase"
EXPERIMENT_FORMAT = "loracheck.experiment"
SLICES_FORMAT = "loracheck.slices"
SPEED_FORMAT = "loracheck.speed"
KKR_FORMAT = "loracheck.kkr"
FORMAT_VERSIONS: dict[str, int] = {
    REPORT_FORMAT: 1,
    PHASE_FORMAT: 1,
    EXPERIMENT_FORMAT: 1,
    SLICES_FORMAT: 1,
    SPEED_FORMAT: 1,
    KKR_FORMAT: 1,
}
#: The largest magnitude of a drawn number: sums and differences of such numbers stay finite, so
#: axis limits stay finite too (matplotlib refuses infinite ones).
MAX_MAGNITUDE = 1e100
#: The largest drawn int (exact as a float).
_MAX_INT = 2**53


def _fail(where: str, expected: str, value: Any) -> NoReturn:
    raise UserInputError(f"{where}: expected {expected}, got {shown(value)}")


def _obj(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        _fail(where, "a JSON object", value)
    return value


def _opt_obj(parent: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    """``parent[key]`` (an object), ``{}`` when absent: the readers' ``.get(key, {})`` (null is no object)."""
    return _obj(parent[key], f"{where}[{key!r}]") if key in parent else {}


def _list(value: Any, where: str, *, nonempty: bool = False) -> list[Any]:
    """A JSON array (a tuple too: results passed in memory to :func:`figures.gallery.gallery_items`)."""
    if not isinstance(value, (list, tuple)) or (nonempty and not value):
        _fail(where, "a non-empty list" if nonempty else "a list", value)
    return list(value)


def _has(parent: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in parent:
        raise UserInputError(f"{where}: missing {key!r}")
    return parent[key]


def _num(value: Any, where: str, *, low: float | None = None) -> float:
    if not finite_number(value) or abs(value) > MAX_MAGNITUDE or (low is not None and value < low):
        bound = f" >= {low:g}" if low is not None else ""
        _fail(where, f"a finite number{bound} of magnitude at most {MAX_MAGNITUDE:g}", value)
    return float(value)


def _int(value: Any, where: str, *, low: int = 0) -> int:
    # numbers.Integral: an int, or a NumPy int in results passed in memory
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Integral)
        or not low <= int(value) <= _MAX_INT
    ):
        _fail(where, f"an int in [{low}, 2**53]", value)
    return int(value)


def _bool(value: Any, where: str) -> None:
    if not isinstance(value, bool):
        _fail(where, "true or false", value)


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str):
        _fail(where, "a str", value)
    return str(value)


def _numbers(value: Any, where: str, *, nonempty: bool = False, low: float | None = None) -> list[float]:
    items = _list(value, where, nonempty=nonempty)
    return [_num(x, f"{where}[{i}]", low=low) for i, x in enumerate(items)]


def saved_format(result: Any, where: str = "result") -> tuple[Any, Any]:
    """``(format, version)`` of saved data, in the current spelling or an earlier one.

    ``{"format": "loracheck.phase", "version": 1}`` and ``{"schema": "loracheck.phase/1"}`` (files
    written before the ``version`` key) both give ``("loracheck.phase", 1)``; a missing field is
    ``None``.  ``InputTypeError`` naming ``where`` for data that is not an object.  (The same reading
    as :func:`verify.results.saved_format`: :func:`theory.fileformat.saved_format`.)
    """
    if not isinstance(result, Mapping):
        raise InputTypeError(f"{where}: expected saved JSON data (a dict), got {type(result).__name__}")
    return read_format(result)


def check_format(result: Any, fmt: str, what: str, where: str = "result") -> None:
    """Refuse data that is not of format ``fmt`` at the version the figures read.

    ``what`` says what was expected for a non-object (``"the JSON data of `loracheck phase`"``).
    """
    if not isinstance(result, Mapping):
        raise InputTypeError(f"{where}: expected {what} (a dict), got {type(result).__name__}")
    found, version = saved_format(result, where)
    if found != fmt or type(version) is not int or version != FORMAT_VERSIONS[fmt]:
        raise UserInputError(
            f"{where}: expected format {fmt!r}, version {FORMAT_VERSIONS[fmt]}, got format {shown(found)}, "
            f"version {shown(version)}"
        )


def finished_entry(
    result: Any, *, fmt: str, what: str, group: str, arg: str, chosen: str | None
) -> tuple[str, Mapping[str, Any]]:
    """The entry ``chosen`` (default: the first) of ``result[group]`` among those with a finished table.

    For the files whose entries fill in as a run goes (``kkr.json``'s configurations, ``speed.json``'s
    problems): ``fmt`` and ``what`` as in :func:`check_format`; ``arg`` names the argument that
    chose the entry, in errors.
    """
    check_format(result, fmt, what)
    done = {k: v for k, v in result.get(group, {}).items() if v.get("table")}
    if not done:
        raise UserInputError(f"result: expected at least one {arg} with a finished table")
    if chosen is None:
        name = next(iter(done))
        return name, done[name]
    if chosen not in done:
        raise UserInputError(f"{arg}: expected one of {sorted(done)}, got {chosen!r}")
    return chosen, done[chosen]


def check_result(result: Any, where: str = "result") -> str:
    """Validate saved results of any format the gallery draws; returns the format.

    ``where`` names the data in messages (``result``, ``results[2]``).  Raises
    :class:`~theory.errors.UserInputError` (``InputTypeError`` for a non-object) naming the first
    bad field.
    """
    kind, version = saved_format(result, where)
    checks = {
        PHASE_FORMAT: _check_phase,
        REPORT_FORMAT: _check_report,
        EXPERIMENT_FORMAT: _check_experiment,
        SLICES_FORMAT: _check_slices,
        SPEED_FORMAT: _check_speed,
        KKR_FORMAT: _check_kkr,
    }
    if not isinstance(kind, str) or kind not in checks:
        raise UserInputError(
            f"{where}: expected saved data of format {', '.join(map(repr, checks))}; got {shown(kind)}"
        )
    if kind != REPORT_FORMAT:  # a report, read as .get("verdicts", []), is drawn whatever its version
        check_format(result, kind, "saved JSON data", where)
    checks[kind](result, where)
    return kind


# ---------------------------------------------------------------------------------------------
# One checker per format
# ---------------------------------------------------------------------------------------------
def _check_phase(result: Mapping[str, Any], where: str) -> None:
    cells = _list(result.get("cells"), f"{where}['cells']", nonempty=True)
    for i, c in enumerate(cells):
        at = f"{where}['cells'][{i}]"
        _obj(c, at)
        for k in ("r", "KN", "nuc_rank", "runs", "global"):
            _int(_has(c, k, at), f"{at}[{k!r}]")
        _num(_has(c, "fraction_global", at), f"{at}['fraction_global']")
        _bool(_has(c, "above_bound", at), f"{at}['above_bound']")
    _opt_obj(result, "config", where)


def _check_report(result: Mapping[str, Any], where: str) -> None:
    verdicts = _list(result.get("verdicts", []), f"{where}['verdicts']")  # read as .get("verdicts", [])
    for i, v in enumerate(verdicts):
        at = f"{where}['verdicts'][{i}]"
        _obj(v, at)
        cert = _opt_obj(v, "certificate", at)
        claim = v.get("claim")
        if claim == "HSK-above" and cert.get("grid"):
            _check_hsk(v, cert, at)
        if claim in RANK_CLAIMS and "singular_values" in cert:
            _check_spectrum(v, cert, at)


def _check_hsk(v: Mapping[str, Any], cert: Mapping[str, Any], at: str) -> None:
    _has(v, "status", at)
    _opt_obj(v, "problem", at)
    _opt_obj(v, "options", at)
    where = f"{at}['certificate']['grid']"
    grid = _list(cert["grid"], where, nonempty=True)
    for i, row in enumerate(grid):
        _obj(row, f"{where}[{i}]")
    legacy = "family" not in grid[0]
    matrix = cert.get("matrix", "softmax" if legacy else "exp")
    if matrix not in ("softmax", "exp"):
        _fail(f"{at}['certificate']['matrix']", "'softmax' or 'exp'", matrix)
    for i, row in enumerate(grid):
        ri = f"{where}[{i}]"
        _num(_has(row, "ratio", ri), f"{ri}['ratio']")
        _int(_has(row, "L", ri), f"{ri}['L']", low=1)
        if row.get("d") is not None:
            _num(row["d"], f"{ri}['d']")
        if legacy:
            _num(_has(row, f"rank_{matrix}", ri), f"{ri}['rank_{matrix}']")
            continue
        _str(_has(row, "family", ri), f"{ri}['family']")
        m = _obj(_has(row, matrix, ri), f"{ri}[{matrix!r}]")
        for k in ("lower", "upper"):
            _num(_has(m, k, f"{ri}[{matrix!r}]"), f"{ri}[{matrix!r}][{k!r}]")


def _check_spectrum(v: Mapping[str, Any], cert: Mapping[str, Any], at: str) -> None:
    _has(v, "status", at)
    _opt_obj(v, "problem", at)
    where = f"{at}['certificate']"
    svs = _list(cert["singular_values"], f"{where}['singular_values']")
    for j, block in enumerate(svs):
        _numbers(block, f"{where}['singular_values'][{j}]", low=0.0)
    ranks = _list(_has(cert, "ranks", where), f"{where}['ranks']")
    for j, r in enumerate(ranks):
        _int(r, f"{where}['ranks'][{j}]")
    if len(ranks) < len(svs):
        _fail(f"{where}['ranks']", f"one rank per block ({len(svs)})", ranks)
    _int(_has(cert, "r_max", where), f"{where}['r_max']")


def _check_curve(points: Any, where: str, *, nonempty: bool) -> None:
    for i, p in enumerate(_list(points, where, nonempty=nonempty)):
        _obj(p, f"{where}[{i}]")
        for k in ("step", "objective"):
            _num(_has(p, k, f"{where}[{i}]"), f"{where}[{i}][{k!r}]")


def _check_experiment(result: Mapping[str, Any], where: str) -> None:
    _opt_obj(result, "setup", where)
    runs = _list(result.get("runs", []), f"{where}['runs']")  # read as .get("runs", [])
    for i, run in enumerate(runs):
        at = f"{where}['runs'][{i}]"
        _obj(run, at)
        if not run.get("lora"):
            continue
        _int(_has(run, "N", at), f"{at}['N']")
        _has(run, "KN", at)
        _has(run, "r_max", at)
        nuc = _obj(_has(run, "nuc", at), f"{at}['nuc']")
        _num(_has(nuc, "objective", f"{at}['nuc']"), f"{at}['nuc']['objective']")
        ft = _opt_obj(run, "full_ft", at)
        if "curve" in ft:  # drawn when non-empty, read as .get("curve", []) for the axis limits
            _check_curve(ft["curve"], f"{at}['full_ft']['curve']", nonempty=False)
        for j, e in enumerate(_list(run["lora"], f"{at}['lora']")):
            ej = f"{at}['lora'][{j}]"
            _obj(e, ej)
            _has(e, "r", ej)
            _bool(_has(e, "above_bound", ej), f"{ej}['above_bound']")
            _check_curve(_has(e, "curve", ej), f"{ej}['curve']", nonempty=True)


def _check_slices(result: Mapping[str, Any], where: str) -> None:
    _opt_obj(result, "problem", where)
    _num(_has(result, "nuc_optimum", where), f"{where}['nuc_optimum']")
    for i, s in enumerate(_list(_has(result, "slices_1d", where), f"{where}['slices_1d']", nonempty=True)):
        at = f"{where}['slices_1d'][{i}]"
        _obj(s, at)
        _has(s, "label", at)
        values = _numbers(_has(s, "values", at), f"{at}['values']", nonempty=True)
        alphas = _numbers(_has(s, "alphas", at), f"{at}['alphas']")
        if len(alphas) != len(values):
            _fail(f"{at}['alphas']", f"{len(values)} numbers (one per value)", alphas)
    for i, s in enumerate(_list(_has(result, "slices_2d", where), f"{where}['slices_2d']")):
        at = f"{where}['slices_2d'][{i}]"
        _obj(s, at)
        _str(_has(s, "center", at), f"{at}['center']")
        _has(s, "label", at)
        if "directions" in s:
            d = s["directions"]
            if not isinstance(d, (list, tuple)) or len(d) != 2:
                _fail(f"{at}['directions']", "a list of two names", d)
        a = _numbers(_has(s, "alphas", at), f"{at}['alphas']")
        b = _numbers(_has(s, "betas", at), f"{at}['betas']")
        if len(a) < 2 or len(b) < 2:
            _fail(f"{at}['alphas'], ['betas']", "at least two steps each", [len(a), len(b)])
        values = _list(_has(s, "values", at), f"{at}['values']")
        if len(values) != len(a):
            _fail(f"{at}['values']", f"{len(a)} rows (one per alpha)", f"{len(values)} rows")
        for j, row in enumerate(values):
            if len(_numbers(row, f"{at}['values'][{j}]")) != len(b):
                _fail(f"{at}['values'][{j}]", f"{len(b)} numbers (one per beta)", row)
    spectra = result.get("hessian_spectra")
    if spectra:
        for i, s in enumerate(_list(spectra, f"{where}['hessian_spectra']")):
            at = f"{where}['hessian_spectra'][{i}]"
            _obj(s, at)
            _has(s, "center", at)
            _numbers(_has(s, "eigenvalues", at), f"{at}['eigenvalues']", nonempty=True)
    if "zero_lambda_min_closed_form" in result:
        _num(result["zero_lambda_min_closed_form"], f"{where}['zero_lambda_min_closed_form']")


def _tabled(result: Mapping[str, Any], key: str, where: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """``(where, entry)`` of each entry of ``result[key]`` (an object) that has a table: the drawn ones."""
    for name, entry in _opt_obj(result, key, where).items():
        at = f"{where}[{key!r}][{name!r}]"
        _obj(entry, at)
        if entry.get("table"):
            yield at, entry


def _check_speed(result: Mapping[str, Any], where: str) -> None:
    config = _opt_obj(result, "config", where)
    if "seeds" in config:  # read as len(config.get("seeds", []))
        _list(config["seeds"], f"{where}['config']['seeds']")
    for at, entry in _tabled(result, "problems", where):
        _opt_obj(entry, "verdict", at)
        _opt_obj(entry, "problem", at)
        table = _obj(entry["table"], f"{at}['table']")
        for init, row in table.items():
            _obj(row, f"{at}['table'][{init!r}]")
            _num(_has(row, "lr", f"{at}['table'][{init!r}]"), f"{at}['table'][{init!r}]['lr']")
        for i, run in enumerate(_list(_has(entry, "runs", at), f"{at}['runs']")):
            ri = f"{at}['runs'][{i}]"
            _obj(run, ri)
            _str(_has(run, "init", ri), f"{ri}['init']")
            _num(_has(run, "lr", ri), f"{ri}['lr']")
            for j, p in enumerate(_list(_has(run, "curve", ri), f"{ri}['curve']")):
                if not isinstance(p, (list, tuple)) or len(p) != 2:
                    _fail(f"{ri}['curve'][{j}]", "a pair [step, fraction]", p)
                _num(p[0], f"{ri}['curve'][{j}][0]")
                _num(p[1], f"{ri}['curve'][{j}][1]")


def _check_kkr(result: Mapping[str, Any], where: str) -> None:
    for at, entry in _tabled(result, "configurations", where):
        for c, v in _opt_obj(entry, "verdicts", at).items():
            _obj(v, f"{at}['verdicts'][{c!r}]")
        if entry.get("constants"):
            _obj(entry["constants"], f"{at}['constants']")
        _opt_obj(entry, "fingerprint", at)
        ref = _obj(_has(entry, "reference", at), f"{at}['reference']")
        _num(_has(ref, "frobenius", f"{at}['reference']"), f"{at}['reference']['frobenius']")
        for i, run in enumerate(_list(_has(entry, "runs", at), f"{at}['runs']")):
            ri = f"{at}['runs'][{i}]"
            _obj(run, ri)
            if run.get("status") != "finished":
                continue
            _str(_has(run, "init", ri), f"{ri}['init']")
            for k in ("penalized", "reference_value", "frobenius"):
                _num(_has(run, k, ri), f"{ri}[{k!r}]")
            for k in ("reference_rank", "lora_rank"):
                if k in run:
                    _int(run[k], f"{ri}[{k!r}]")
