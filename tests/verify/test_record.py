"""The suite's record: verdicts of ``loracheck run`` against the statuses recorded for them."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from landscapes.catalog import ProblemSpec, build_problem
from landscapes.synthetic import gaussian_problem
from verify.jlr.rank import check_jlr_magnitude
from verify.run.record import compare, record_exit_code, record_summary
from verify.run.suite import DEFAULT_SUITE

ROOT = Path(__file__).resolve().parents[2]

SPEC = ProblemSpec(
    "g",
    "gaussian",
    dict(K=1, N=6, blocks=[(5, 4)], lam=0.05, loss="squared", seed=0),
    ("JLR-magnitude",),
)


def test_as_recorded_new_violation_and_lost_holds_through_real_verdicts(tmp_path):
    p = build_problem(SPEC)
    held = check_jlr_magnitude(p)
    assert held.status == "holds"
    # a planted false variant (lam |D*|_* <= 0.1 (L(0) - L(D*))) is violated through the real checker
    false = check_jlr_magnitude(p, factor=0.1, save_dir=tmp_path)
    assert false.status == "violated"
    # float32: the checker says inconclusive (its tolerances are float64 tolerances)
    p32 = gaussian_problem(K=1, N=6, blocks=[(5, 4)], lam=0.05, seed=0, dtype=torch.float32)
    lost = check_jlr_magnitude(p32)
    assert lost.status == "inconclusive"
    lost = type(lost)(**{**lost.__dict__, "problem": dict(lost.problem, name="g")})

    (c,) = compare([held], [SPEC])
    assert c.as_recorded and record_exit_code([c]) == 0
    (c,) = compare([false], [SPEC])
    assert c.kind == "new violation" and record_exit_code([c]) == 1
    (c,) = compare([lost], [SPEC])
    assert c.kind == "holds became inconclusive" and record_exit_code([c]) == 2
    # a recorded refutation that came out as recorded is not news; one that holds now is a difference
    refuted = ProblemSpec(**{**SPEC.__dict__, "expected": {"JLR-magnitude": ("violated", "planted")}})
    (c,) = compare([false], [refuted])
    assert c.as_recorded and record_exit_code([c]) == 0
    (c,) = compare([held], [refuted])
    assert c.kind == "differs" and record_exit_code([c]) == 2
    s = record_summary(compare([false, held], [refuted]))
    assert s["as_recorded"] == 1 and s["known_refutations"] == 1 and len(s["differences"]) == 1
    # a new violation outranks any other difference
    assert record_exit_code(compare([held, false], [SPEC])) == 1


def test_expectations_are_checked_when_a_spec_is_made():
    with pytest.raises(ValueError, match="not checked on it"):
        ProblemSpec(**{**SPEC.__dict__, "expected": {"JLR-equiv": ("violated", "x")}})
    with pytest.raises(ValueError, match="non-holds status"):
        ProblemSpec(**{**SPEC.__dict__, "expected": {"JLR-magnitude": ("holds", "x")}})
    with pytest.raises(ValueError, match="non-holds status"):
        ProblemSpec(**{**SPEC.__dict__, "expected": {"JLR-magnitude": ("violated", "")}})


def test_the_default_suite_records_its_known_refutation_and_inconclusives():
    recorded = {(s.name, c): st for s in DEFAULT_SUITE for c, (st, _) in s.expected.items()}
    assert recorded[("gauss-null-sq-K1", "KKR-includes-JLR")] == "violated"
    assert {st for st in recorded.values()} <= {"violated", "inconclusive"}
    assert all(s.to_dict().get("expected", {}) == {c: {"status": st, "why": w} for c, (st, w) in
               s.expected.items()} for s in DEFAULT_SUITE)  # fmt: skip


def _run(tmp_path, *extra):
    return subprocess.run(
        [sys.executable, "-m", "verify.cli", "run", "--problems", "gauss-null-sq-K1", "--out", str(tmp_path),
         "--no-progress", *extra],
        capture_output=True, text=True, cwd=ROOT, timeout=600,
    )  # fmt: skip


def test_run_exits_0_on_the_known_refutation_and_1_with_strict(tmp_path):
    r = _run(tmp_path / "a")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "known refutation" in r.stdout and "1 known refutation(s)" in r.stdout
    assert "recorded because: a known refutation" in r.stdout
    rep = json.loads((tmp_path / "a" / "report.json").read_text())
    assert rep["record"]["known_refutations"] == 1 and rep["record"]["differences"] == []
    assert rep["suite"][0]["expected"]["KKR-includes-JLR"]["status"] == "violated"
    # the known refutation comes with its counterexample, which `loracheck audit` replays
    (v,) = rep["verdicts"]
    assert v["counterexample"] and Path(v["counterexample"]).is_file()
    assert f"counterexample: {v['counterexample']}" in r.stdout
    from verify.cli.main import main

    assert main(["audit", v["counterexample"], "--no-progress"]) == 1
    r = _run(tmp_path / "b", "--strict")
    assert r.returncode == 1, r.stdout + r.stderr


def test_an_interrupted_run_of_another_selection_is_not_overwritten(tmp_path):
    # A run into an --out that holds an interrupted run of other checks used to reuse nothing and
    # overwrite that run's finished verdicts without a word.
    from verify.cli.main import main
    from verify.report import build_report, write_report

    spec = next(s for s in DEFAULT_SUITE if s.name == "gauss-sq-K1")
    v = check_jlr_magnitude(build_problem(spec))
    write_report(build_report([v], suite=[spec.to_dict()], complete=False), tmp_path)
    before = (tmp_path / "report.json").read_text()
    assert main(["run", "--problems", "gauss-null-sq-K1", "--out", str(tmp_path), "--no-progress"]) == 3
    assert (tmp_path / "report.json").read_text() == before


def test_an_out_that_cannot_be_made_is_refused_before_any_work(tmp_path, capsys):
    from verify.cli.main import main

    (tmp_path / "file").write_text("x")
    assert main(["run", "--problems", "gauss-null-sq-K1", "--out", str(tmp_path / "file" / "d")]) == 3
    assert "--out: cannot create the directory" in capsys.readouterr().err


def test_report_md_shows_the_record():
    from verify.report import report_markdown

    spec = next(s for s in DEFAULT_SUITE if s.name == "gauss-null-sq-K1")
    p = build_problem(SPEC)
    false = check_jlr_magnitude(p, factor=0.1)
    rep = {
        "created": "now", "seconds": 1.0, "environment": {}, "counts": {"holds": 0, "violated": 1,
        "inconclusive": 0}, "verdicts": [false.to_dict()], "record": record_summary(compare([false], [SPEC])),
    }  # fmt: skip
    md = report_markdown(rep)
    assert "Against the suite's record: 0 as recorded" in md and "new violation: JLR-magnitude on g" in md
    assert spec.expected  # the suite's own record is what `loracheck run` writes there


def test_a_saved_verdict_is_checked_for_reason_and_counterexample():
    from theory.errors import UserInputError
    from verify.verdict import Verdict

    d = {"claim": "JLR-gd", "status": "inconclusive", "problem": {}, "certificate": {}, "reason": "r"}
    assert Verdict.from_dict(d).reason == "r"
    with pytest.raises(UserInputError, match="'reason'"):
        Verdict.from_dict({k: v for k, v in d.items() if k != "reason"})
    with pytest.raises(UserInputError, match="counterexample"):
        Verdict.from_dict(dict(d, counterexample="/x.npz"))
    with pytest.raises(ValueError, match="decided verdict"):
        Verdict("JLR-gd", "inconclusive", {}, {}, "r", counterexample="/x.npz")
