"""Results that loracheck wrote and a user hands back in are input: forged or damaged ones are refused.

Each case goes through the command line and must end with exit code 3 (bad input) and a message
naming the field, never with exit code 4 (an internal error: a ``KeyError``, ``TypeError``,
``AttributeError`` or ``OverflowError`` escaping from the code that reads the data).
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from verify.cli.main import main
from verify.registry import CHECKERS

# ---------------------------------------------------------------------------------------------
# `loracheck figures --from FILE.json`: every field the figures read is checked before drawing
# ---------------------------------------------------------------------------------------------
REPORT = "loracheck.report"
_LORA_RUN = {"N": 2, "KN": 2, "r_max": 1, "nuc": {"objective": 0.0}}


@pytest.mark.parametrize(
    "data, match",
    [
        ({"format": REPORT, "verdicts": [1]}, "result['verdicts'][0]: expected a JSON object, got 1"),
        ({"format": REPORT, "verdicts": 5}, "result['verdicts']: expected a list, got 5"),
        ({"format": REPORT, "verdicts": None}, "result['verdicts']: expected a list, got None"),
        (
            {
                "format": REPORT,
                "verdicts": [
                    {
                        "claim": "HSK-above",
                        "status": "holds",
                        "options": None,
                        "certificate": {
                            "grid": [{"family": "ov", "ratio": 0.5, "L": 8, "exp": {"lower": 1, "upper": 2}}]
                        },
                    }
                ],
            },
            "result['verdicts'][0]['options']: expected a JSON object, got None",
        ),
        (
            {"format": REPORT, "verdicts": [{"claim": "HSK-above", "certificate": [1]}]},
            "result['verdicts'][0]['certificate']: expected a JSON object, got [1]",
        ),
        (
            {
                "format": REPORT,
                "verdicts": [{"claim": "HSK-above", "status": "holds", "certificate": {"grid": 5}}],
            },
            "result['verdicts'][0]['certificate']['grid']: expected a non-empty list, got 5",
        ),
        (
            {"format": REPORT, "verdicts": [{"claim": "HSK-above", "certificate": {"grid": 5}}]},
            "result['verdicts'][0]: missing 'status'",
        ),
        (
            {
                "format": REPORT,
                "verdicts": [
                    {
                        "claim": "HSK-above",
                        "status": "holds",
                        "certificate": {"grid": [{"family": "ov", "L": 8}]},
                    }
                ],
            },
            "result['verdicts'][0]['certificate']['grid'][0]: missing 'ratio'",
        ),
        (
            {
                "format": REPORT,
                "verdicts": [
                    {
                        "claim": "JLR-rank-NUC",
                        "status": "holds",
                        "certificate": {"singular_values": [["a"]], "ranks": [1], "r_max": 1},
                    }
                ],
            },
            "result['verdicts'][0]['certificate']['singular_values'][0][0]: expected a finite number",
        ),
        (
            {"schema": "loracheck.phase/1", "cells": [{"r": 1}]},
            "result['cells'][0]: missing 'KN'",
        ),
        (
            {
                "schema": "loracheck.phase/1",
                "cells": [
                    {
                        "r": "x",
                        "KN": 3,
                        "nuc_rank": 1,
                        "runs": 1,
                        "global": 1,
                        "fraction_global": 1.0,
                        "above_bound": True,
                    }  # fmt: skip
                ],
            },
            "result['cells'][0]['r']: expected an int",
        ),
        (
            {
                "schema": "loracheck.experiment/1",
                "runs": [{**_LORA_RUN, "lora": [{"r": 1, "above_bound": True, "curve": [{"step": 0}]}]}],
            },
            "result['runs'][0]['lora'][0]['curve'][0]: missing 'objective'",
        ),
        (
            {
                "schema": "loracheck.experiment/1",
                "runs": [
                    {
                        **_LORA_RUN,
                        "lora": [
                            {
                                "r": 1,
                                "above_bound": True,
                                "curve": [{"step": 0, "objective": 1e308}, {"step": 1, "objective": -1e308}],
                            }
                        ],
                    }
                ],
            },
            "result['runs'][0]['lora'][0]['curve'][0]['objective']: expected a finite number",
        ),
        (
            {
                "format": "loracheck.speed/1",
                "problems": {
                    "p": {
                        "table": {"vanilla": {"lr": "x"}},
                        "runs": [{"init": "vanilla", "lr": "x", "curve": [[0, 0.5], [1, 0.1]]}],
                    }
                },
            },
            "result['problems']['p']['table']['vanilla']['lr']: expected a finite number",
        ),
        (
            {
                "format": "loracheck.speed/1",
                "problems": {"p": {"table": {"vanilla": {"lr": 0.1}}, "runs": [[1]]}},
            },
            "result['problems']['p']['runs'][0]: expected a JSON object",
        ),
        (
            {"format": "loracheck.kkr/1", "configurations": 5},
            "result['configurations']: expected a JSON object",
        ),
        (
            {
                "format": "loracheck.kkr/1",
                "configurations": {"c": {"table": {"zero": {}}, "runs": [{"status": "finished"}]}},
            },
            "result['configurations']['c']: missing 'reference'",
        ),
        (
            {
                "schema": "loracheck.slices/1",
                "nuc_optimum": 0.0,
                "slices_1d": [{"label": "a", "alphas": [], "values": []}],
                "slices_2d": [],
            },
            "result['slices_1d'][0]['values']: expected a non-empty list",
        ),
        (
            {
                "schema": "loracheck.slices/1",
                "nuc_optimum": 0.0,
                "slices_1d": [{"label": "a", "alphas": [0.0], "values": [1.0]}],
                "slices_2d": [
                    {"center": "zero", "label": "b", "alphas": [0, 1], "betas": [0, 1], "values": [[1, 2]]}
                ],
            },
            "result['slices_2d'][0]['values']: expected 2 rows (one per alpha)",
        ),
    ],
)
def test_figures_refuse_forged_results(tmp_path, capsys, data, match):
    src = tmp_path / "r.json"
    src.write_text(json.dumps(data))
    assert main(["figures", "--from", str(src), "--out", str(tmp_path / "o")]) == 3
    err = capsys.readouterr().err
    assert match in err and str(src) in err and "internal error" not in err
    assert not (tmp_path / "o" / "index.html").exists()


def test_figures_draw_kkr_constants_of_any_size(tmp_path, capsys):
    """An alpha^ of 10**400 (an int float() cannot convert) is shown without a value, not a crash."""
    entry = {
        "table": {"zero": {}},
        "reference": {"frobenius": 1.0, "rank": 1},
        "runs": [
            {"status": "finished", "init": "zero", "penalized": 1.0, "reference_value": 1.0, "frobenius": 1.0}
        ],
        "constants": {"alpha": 10**400, "beta": 1.0},
    }
    src = tmp_path / "kkr.json"
    src.write_text(json.dumps({"format": "loracheck.kkr/1", "configurations": {"c": entry}}))
    assert main(["figures", "--from", str(src), "--out", str(tmp_path / "o")]) == 0
    assert (tmp_path / "o" / "kkr-c.png").is_file()
    capsys.readouterr()


# ---------------------------------------------------------------------------------------------
# A phase sweep's SQLite store with forged rows: `figures --from S.sqlite`, `sweep --resume`
# ---------------------------------------------------------------------------------------------
PHASE_CONFIG = """
[sweep]
name = "s"
task = "phase"

[params]
size = 4

[grid]
problem = [{K = 1, N = 3}]
r = [1]
"""


@pytest.fixture(scope="module")
def phase_sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("phase")
    cfg = root / "c.toml"
    cfg.write_text(PHASE_CONFIG)
    assert main(["sweep", str(cfg), "--out", str(root / "out"), "--no-progress"]) in (0, 1, 2)
    return cfg, root / "out" / "s.sqlite"


def _forged(phase_sweep, tmp_path: Path, column: str, value: str | None) -> tuple[Path, Path]:
    cfg, store = phase_sweep
    out = tmp_path / "out"
    out.mkdir()
    forged = out / "s.sqlite"
    shutil.copy(store, forged)
    with sqlite3.connect(forged) as con:
        con.execute(f"UPDATE tasks SET {column} = ?", (value,))
    con.close()
    shutil.copy(cfg, tmp_path / "c.toml")
    return tmp_path / "c.toml", forged


FORGED_ROWS = [
    ("result", "[1, 2]", "task 0: result: expected a JSON object (a dict), got [1, 2]"),
    ("result", '{"global": "yes"}', "task 0: result 'r': expected an int"),
    ("result", None, "task 0: result: expected a JSON object (a dict), got None"),
    ("spec", "[1]", "task 0: spec: expected a JSON object, got [1]"),
    ("seconds", "abc", "column seconds: expected a number, got 'abc'"),
    ("idx", "x", "column idx: expected a number, got 'x'"),
]


def test_the_untouched_store_draws(phase_sweep, tmp_path, capsys):
    assert main(["figures", "--from", str(phase_sweep[1]), "--out", str(tmp_path / "o")]) == 0
    capsys.readouterr()


@pytest.mark.parametrize("column, value, match", FORGED_ROWS)
def test_figures_refuse_a_forged_store(phase_sweep, tmp_path, capsys, column, value, match):
    _, store = _forged(phase_sweep, tmp_path, column, value)
    capsys.readouterr()
    assert main(["figures", "--from", str(store), "--out", str(tmp_path / "o")]) == 3
    err = capsys.readouterr().err
    assert match in err and "internal error" not in err


@pytest.mark.parametrize(
    "column, value, match",
    [
        *FORGED_ROWS[:3],
        (
            "result",
            '{"r": 1, "init": "gaussian", "nuc": {"rank": 1, "rel_gap": NaN}}',
            "task 0: result 'nuc' 'rel_gap': expected a finite number",
        ),
    ],
)
def test_sweep_resume_refuses_a_forged_store(phase_sweep, tmp_path, capsys, column, value, match):
    cfg, _ = _forged(phase_sweep, tmp_path, column, value)
    capsys.readouterr()
    assert main(["sweep", str(cfg), "--out", str(tmp_path / "out"), "--resume", "--no-progress"]) == 3
    err = capsys.readouterr().err
    assert match in err and "internal error" not in err


def test_phase_size_check_takes_ints_of_any_size(tmp_path, capsys):
    """N = 10**400 from a TOML file: the memory check refuses it (no float division overflows)."""
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'[sweep]\ntask = "phase"\nname = "b"\n[grid]\nproblem = [{{K = 1, N = {10**400}}}]\nr = [1]\n'
    )
    assert main(["sweep", str(cfg), "--out", str(tmp_path / "out"), "--no-progress"]) == 3
    err = capsys.readouterr().err
    assert "phase memory budget" in err and "about 10**400" in err and "internal error" not in err
    assert str(10**400) not in err and len(err) < 800  # the spec is quoted cut, not 401 digits


# ---------------------------------------------------------------------------------------------
# `loracheck kkr --recertify` on a forged kkr.json
# ---------------------------------------------------------------------------------------------
_RUN = {"init": "zero", "seed": 0, "status": "finished", "penalized": 1.0}


@pytest.mark.parametrize(
    "configurations, match",
    [
        (5, "'configurations': expected a JSON object, got 5"),
        ({"double-well": 5}, "configuration 'double-well': expected a JSON object, got 5"),
        ({"double-well": {"problem": "double-well", "runs": 5}}, "'runs': expected a list of runs, got 5"),
        ({"double-well": {"problem": "double-well", "runs": [7]}}, "runs[0]: expected a JSON object (a run)"),
        (
            {"double-well": {"problem": "double-well", "runs": [{**_RUN, "penalized": "x"}]}},
            "runs[0]['penalized']: expected a finite number, got 'x'",
        ),
        (
            {"double-well": {"problem": "double-well", "runs": [{**_RUN, "A": "x"}]}},
            "runs[0]['A']: expected a list of matrices, got 'x'",
        ),
        (
            {"double-well": {"problem": "double-well", "runs": [{**_RUN, "A": [[[1.0], [1.0, 2.0]]]}]}},
            "runs[0]['A'][0][1]: expected a row of length 1",
        ),
        (
            {"double-well": {"problem": "double-well", "runs": [_RUN], "reference": [1]}},
            "'reference': expected a JSON object, got [1]",
        ),
        (
            {"double-well": {"problem": "double-well", "runs": [_RUN]}},
            "'reference': expected a JSON object, got None",
        ),
    ],
)
def test_recertify_refuses_a_forged_kkr_file(tmp_path, capsys, configurations, match):
    (tmp_path / "kkr.json").write_text(
        json.dumps({"format": "loracheck.kkr/1", "configurations": configurations})
    )
    assert main(["kkr", "--out", str(tmp_path), "--recertify", "zero:0"]) == 3
    err = capsys.readouterr().err
    assert match in err and "internal error" not in err


@pytest.fixture(scope="module")
def kkr_file(tmp_path_factory):
    root = tmp_path_factory.mktemp("kkr")
    args = ["kkr", "--problems", "double-well", "--inits", "zero", "--seeds", "1", "--samples", "5",
            "--out", str(root), "--no-progress"]  # fmt: skip
    assert main(args) == 0
    return json.loads((root / "kkr.json").read_text())


@pytest.mark.parametrize(
    "A, match",
    [
        ([], "['A']: expected 1 matrices (one per block)"),
        ([[[1.0]]], "expected a 2 x r and a 2 x r matrix"),
    ],
)
def test_recertify_refuses_factors_of_another_shape(kkr_file, tmp_path, capsys, A, match):
    data = json.loads(json.dumps(kkr_file))
    data["configurations"]["double-well"]["runs"][0]["A"] = A
    (tmp_path / "kkr.json").write_text(json.dumps(data))
    capsys.readouterr()
    assert main(["kkr", "--out", str(tmp_path), "--recertify", "zero:0"]) == 3
    err = capsys.readouterr().err
    assert match in err and "internal error" not in err


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("reference", {"value": 1.0}, "'reference': missing 'risk'"),
        ("bounds", None, "'bounds': expected a JSON object, got None"),
        (
            "constants",
            {"alpha": 1.0, "gamma": 2.0},
            "'constants': expected the fields of the restricted constants",
        ),
    ],
)
def test_recertify_refuses_a_forged_reference(kkr_file, tmp_path, capsys, field, value, match):
    data = json.loads(json.dumps(kkr_file))
    data["configurations"]["double-well"][field] = value
    (tmp_path / "kkr.json").write_text(json.dumps(data))
    capsys.readouterr()
    assert main(["kkr", "--out", str(tmp_path), "--recertify", "zero:0"]) == 3
    err = capsys.readouterr().err
    assert match in err and "internal error" not in err


@pytest.mark.parametrize(
    "table, field, value, match",
    [
        ("table1", "nuclear", "x", r"table1\[0\]\['nuclear'\]: expected a finite number, got 'x'"),
        ("table1", "certified", "yes", r"table1\[0\]\['certified'\]: expected true or false"),
        ("table2", "beta", 0.0, r"table2\[0\]\['beta'\]: expected a number > 0, got 0.0"),
        ("table2", "regime", None, r"table2\[0\]\['regime'\]: expected a str, got None"),
    ],
)
def test_kkr_tables_resume_checks_the_rows_it_prints(tmp_path, table, field, value, match):
    """``loracheck kkr --tables`` prints the rows of a resumed file: each printed field is checked."""
    from theory.errors import UserInputError
    from verify.kkr.experiment import kkr_paper_tables

    out = tmp_path / "t.json"
    kw = {"lams": (0.05,), "ranks": (2,), "samples": 5, "progress": False}
    kkr_paper_tables("double-well", out=out, **kw)
    data = json.loads(out.read_text())
    assert data["table2"] and "skipped" not in data["table2"][0], data["table2"]
    data[table][0][field] = value
    out.write_text(json.dumps(data))
    with pytest.raises(UserInputError, match=match):
        kkr_paper_tables("double-well", out=out, **kw)


@settings(max_examples=60, deadline=None)
@given(
    claim=st.sampled_from(sorted(CHECKERS)),
    value=st.one_of(
        st.none(), st.booleans(), st.integers(-(10**400), 10**400), st.text(max_size=5),
        st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    ),
    key=st.sampled_from(
        ["forms", "points", "steps_faster", "inits", "runs", "table", "blocks", "rows", "per_length",
         "rank_exponent_by_ratio", "rho_hat", "timing", "bound", "rel_gap", "ranks"]
    ),
)  # fmt: skip
def test_evidence_lines_never_fail_on_hostile_certificates(claim, value, key):
    # report.evidence runs on certificates read back from files (resumed runs, audits): a value of
    # the wrong shape falls back to the raw fields instead of failing the command
    from verify.report import evidence

    line = evidence({"claim": claim, "status": "holds", "certificate": {key: value, "steps_slower": value}})
    assert isinstance(line, str)
    assert evidence({"claim": claim, "status": "holds", "certificate": "abc"}) == ""
