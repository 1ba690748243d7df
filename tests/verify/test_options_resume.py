"""Hostile options and hostile resume files (issue 25, sections 4 and 5).

Checker options are range-checked on every path (the CLI, ``audit(options=...)``, a replayed
counterexample's stored options, a direct call of a checker); a resumed ``--json`` audit or an
interrupted ``loracheck run`` reuses a finished verdict only if the file validates against its schema,
the verdict carries the certificate fields its checker writes, and the file was written by this
loracheck version with the same options.  Bad input is exit 3, never a spoofed verdict or exit 4.
"""

from __future__ import annotations

import inspect
import json
import math
import re

import numpy as np
import pytest

from landscapes.attention import HskSetting
from landscapes.io import save_problem
from landscapes.synthetic import gaussian_problem, teacher_problem
from theory.errors import InputTypeError, UserInputError
from verify.cli.main import main
from verify.jlr.rank import (
    check_jlr_equiv,
    check_jlr_magnitude,
    check_jlr_rank_ft,
    check_jlr_rank_nuc,
    check_jlr_zero_saddle,
)
from verify.jlr.second_order import check_jlr_no_spurious
from verify.options import OPTION_SPECS, check_options
from verify.registry import CHECKERS
from verify.report import environment
from verify.run.audits import audit, plan_audit, read_audit, replay_options
from verify.run.suite import DEFAULT_SUITE, finished_verdicts
from verify.verdict import CERTIFICATE_KEYS, Verdict


@pytest.fixture(scope="module")
def sq():
    return gaussian_problem(K=1, N=6, blocks=[(6, 5)], lam=0.05, loss="squared", seed=0)


def _counterexample(tmp_path, problem, claim, options, key="options_json"):
    """A problem file as a checker saves a counterexample, with edited stored options."""
    path = tmp_path / f"{claim}-edited.npz"
    text = json.dumps(options) if key == "options_json" else json.dumps({"options": options})
    save_problem(problem, path, extra={"claim": np.array(claim), key: np.array(text)})
    return path


# ------------------------------------------------------------------------------------------------
# 1. Options: one declaration, every path


def test_every_checker_option_has_a_spec_and_the_defaults_fit_it():
    for claim, f in CHECKERS.items():
        params = inspect.signature(f).parameters
        kw = {n: p.default for n, p in params.items() if p.kind is p.KEYWORD_ONLY and n != "save_dir"}
        assert set(kw) == set(OPTION_SPECS[claim]), claim
        check_options(claim, kw)  # the defaults are in range


def test_the_suites_checker_options_fit_their_specs():
    from verify.run.suite import HSK_SUITE, REAL_SUITE

    for spec in (*DEFAULT_SUITE, *REAL_SUITE, *HSK_SUITE):
        for claim, opts in spec.checker_options.items():
            if claim == "evidence":  # collect_evidence's options, as the KKR checkers' collect=
                check_options("KKR-special", {"collect": opts})
            else:
                check_options(claim, opts)


@pytest.mark.parametrize(
    "options, error, match",
    [
        (
            {"rtol": -1.0},
            UserInputError,
            r"JLR-zero-saddle option rtol: expected a number in \(0, 1\), got -1.0",
        ),
        ({"rtol": 2.0}, UserInputError, "rtol: expected a number in"),
        ({"rtol": "1e-10"}, InputTypeError, "rtol: expected a number in .*got '1e-10'"),
        ({"rtol": None}, InputTypeError, "rtol: expected"),
        ({"lanczos_tol": True}, InputTypeError, "lanczos_tol: expected"),
        ({"max_dense": 10**9}, UserInputError, r"max_dense: expected an int >= 0 \(at most 10000\)"),
        ({"max_dense": 2.5}, InputTypeError, "max_dense: expected an int"),
        ({"rank": 10**9}, UserInputError, "rank: expected a positive int"),
        ({"rank": 12}, UserInputError, r"rank: expected a rank in \[1, m \+ n\] = \[1, 11\]"),
        ({"rank": [1]}, InputTypeError, "rank: expected a positive int"),
    ],
)
def test_replayed_options_out_of_range_or_of_the_wrong_type_are_refused(sq, tmp_path, options, error, match):
    path = _counterexample(tmp_path, sq, "JLR-zero-saddle", options)
    from landscapes.io import load_problem

    problem, extras = load_problem(path)
    with pytest.raises(error, match=match):
        task = replay_options(extras)
        audit(problem, tasks=[task], progress=False)  # (the problem-dependent rank bound)


def test_replayed_options_of_a_landscape_record_are_checked(sq, tmp_path):
    path = _counterexample(tmp_path, sq, "JLR-no-spurious", {"n_starts": 10**9}, key="record_json")
    from landscapes.io import load_problem

    _, extras = load_problem(path)
    with pytest.raises(
        UserInputError, match=r"JLR-no-spurious option n_starts: expected a positive int \(at most 10000\)"
    ):
        replay_options(extras)


@pytest.mark.parametrize("stored", [[1, 2], "0.5", 3])
def test_stored_options_that_are_not_an_object_are_refused(sq, tmp_path, stored):
    path = tmp_path / "bad.npz"
    save_problem(
        sq, path, extra={"claim": np.array("JLR-magnitude"), "options_json": np.array(json.dumps(stored))}
    )
    from landscapes.io import load_problem

    _, extras = load_problem(path)
    with pytest.raises(InputTypeError, match="options_json: expected a JSON object"):
        replay_options(extras)


@pytest.mark.parametrize(
    "options, match",
    [
        ({"rtol": -1.0}, "rtol"),
        ({"rtol": "x"}, "rtol"),
        ({"max_dense": 10**9}, "max_dense"),
        ({"lanczos_tol": math.inf}, "options_json: expected .* non-standard constant Infinity"),
    ],
)
def test_cli_replay_with_bad_stored_options_is_exit_3(sq, tmp_path, capsys, options, match):
    # Before: {"rtol": -1.0} made the true JLR-zero-saddle come out violated (exit 1); "x" was exit 4.
    # Infinity is not JSON: the stored text is refused before any option is looked at.
    path = _counterexample(tmp_path, sq, "JLR-zero-saddle", options)
    assert main(["audit", str(path), "--no-progress"]) == 3
    err = capsys.readouterr().err
    assert re.search(match if "options_json" in match else "JLR-zero-saddle option " + match, err), err
    assert "expected" in err


def test_cli_rank_above_the_block_size_is_exit_3(sq, tmp_path, capsys):
    path = tmp_path / "p.npz"
    save_problem(sq, path)
    assert main(["audit", str(path), "--rank", "12", "--claims", "JLR-no-spurious", "--no-progress"]) == 3
    assert (
        "rank: expected a rank in [1, m + n] = [1, 11] on block 0 (6 x 5), got 12" in capsys.readouterr().err
    )


@pytest.mark.parametrize(
    "options, error, match",
    [
        ({"JLR-rank-NUC": {"gap_rtol": -1.0}}, UserInputError, "JLR-rank-NUC option gap_rtol"),
        ({"JLR-rank-NUC": {"gap_rtol": float("nan")}}, UserInputError, "gap_rtol"),
        ({"JLR-rank-NUC": {"seed": -1}}, UserInputError, "JLR-rank-NUC option seed"),
        ({"JLR-magnitude": {"gap_rtol": "small"}}, InputTypeError, "JLR-magnitude option gap_rtol"),
        ({"JLR-no-spurious": {"n_starts": 10**9}}, UserInputError, "n_starts: expected a positive int"),
        ({"JLR-no-spurious": {"rank": 12}}, UserInputError, "on block 0"),
        (
            {"JLR-no-spurious": {"enforce_hypothesis": 1}},
            InputTypeError,
            "enforce_hypothesis: expected a bool",
        ),
        ({"JLR-equiv": {"balance_rtol": 0.0}}, UserInputError, "balance_rtol"),
    ],
)
def test_audit_options_out_of_range_are_refused_before_any_work(sq, options, error, match):
    with pytest.raises(error, match=match):
        plan_audit(sq, claims=list(options), options=options)
    with pytest.raises(error, match=match):
        audit(sq, claims=list(options), options=options, progress=False)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda p: check_jlr_magnitude(p, gap_rtol=-1.0), UserInputError, "JLR-magnitude option gap_rtol"),
        (lambda p: check_jlr_rank_nuc(p, rank_rtol=1.0), UserInputError, "rank_rtol"),
        (lambda p: check_jlr_rank_ft(p, grad_rtol="1e-7"), InputTypeError, "grad_rtol"),
        (lambda p: check_jlr_zero_saddle(p, rtol=float("nan")), UserInputError, "rtol"),
        (lambda p: check_jlr_equiv(p, seed=2.0), InputTypeError, "JLR-equiv option seed"),
        (lambda p: check_jlr_equiv(p, enforce_hypothesis="no"), InputTypeError, "enforce_hypothesis"),
        (lambda p: check_jlr_no_spurious(p, rank=[12], n_starts=1), UserInputError, "rank"),
        (lambda p: check_jlr_no_spurious(p, grad_rtol=2.0, n_starts=1), UserInputError, "grad_rtol"),
        (lambda p: CHECKERS["WYL-speed"](p, gap_rtol=-1.0), UserInputError, "WYL-speed option gap_rtol"),
    ],
)
def test_direct_checker_calls_are_refused(sq, call, error, match):
    with pytest.raises(error, match=match):
        call(sq)


# ------------------------------------------------------------------------------------------------
# 2. Resume: schema, certificate fields, options and version


@pytest.fixture(scope="module")
def audit_file(tmp_path_factory, sq):
    """A finished audit of two cheap claims, written by the CLI."""
    d = tmp_path_factory.mktemp("audit")
    problem = d / "p.npz"
    save_problem(sq, problem)
    out = d / "out.json"
    args = ["audit", str(problem), "--claims", "JLR-magnitude", "JLR-rank-NUC", "--json", str(out)]
    assert main([*args, "--no-progress"]) == 0
    return problem, out, json.loads(out.read_text())


def _rerun(audit_file, tmp_path, edit):
    problem, _, data = audit_file
    data = json.loads(json.dumps(data))
    data["complete"] = False
    edit(data)
    out = tmp_path / "out.json"
    out.write_text(json.dumps(data))
    args = ["audit", str(problem), "--claims", "JLR-magnitude", "JLR-rank-NUC", "--json", str(out)]
    return main([*args, "--no-progress"]), out


def test_an_unedited_interrupted_audit_is_reused(audit_file, tmp_path, capsys):
    code, out = _rerun(audit_file, tmp_path, lambda d: None)
    assert code == 0
    assert "(2 verdicts reused from" in capsys.readouterr().out


def test_forged_holds_with_an_empty_certificate_is_refused(audit_file, tmp_path, capsys):
    def forge(d):
        d["verdicts"][1]["certificate"] = {}

    code, out = _rerun(audit_file, tmp_path, forge)
    assert code == 3
    err = capsys.readouterr().err
    assert str(out) in err and "verdict 1 (JLR-rank-NUC)" in err
    assert "missing KN, block_triangular_sum, dual, gap" in err and "--fresh" in err


def test_forged_holds_with_a_partial_certificate_is_refused_by_the_api(audit_file, sq):
    data = json.loads(json.dumps(audit_file[2]))
    data["complete"] = False
    data["verdicts"][0]["certificate"] = {"L0": 1.0}
    with pytest.raises(UserInputError, match=r"resume: verdict 0 \(JLR-magnitude\).*missing L_star, gap"):
        audit(sq, claims=["JLR-magnitude", "JLR-rank-NUC"], resume=data, progress=False)


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda d: d["verdicts"][0].pop("status"), r"\$.verdicts\[0\]: missing 'status'"),
        (lambda d: d["verdicts"][0].update(status="proved"), r"\$.verdicts\[0\].status: expected one of"),
        (
            lambda d: d["verdicts"][0].update(certificate=[]),
            r"verdicts\[0\].certificate: expected a JSON object",
        ),
        (lambda d: d["verdicts"][0].update(claim=7), r"verdicts\[0\].claim: expected a JSON string"),
        (lambda d: d["verdicts"][0].pop("request"), r"missing 'request'"),
        (
            lambda d: d["verdicts"][0]["request"].update(options=None),
            r"request.options: expected a JSON object",
        ),
        (lambda d: d.update(environment="x"), r"\$.environment: expected a JSON object"),
        (lambda d: d.update(verdicts={}), r"\$.verdicts: expected a JSON array"),
        (
            lambda d: d["verdicts"][0]["request"].update(claim="JLR-rank-NUC"),
            "requested claim 'JLR-rank-NUC'",
        ),
    ],
)
def test_malformed_audit_files_are_exit_3(audit_file, tmp_path, capsys, edit, match):
    code, out = _rerun(audit_file, tmp_path, edit)
    assert code == 3
    err = capsys.readouterr().err
    assert str(out) in err and "--fresh" in err
    import re

    assert re.search(match, err), err


def test_read_audit_refuses_a_file_missing_status(audit_file, tmp_path):
    data = json.loads(json.dumps(audit_file[2]))
    del data["verdicts"][0]["status"]
    p = tmp_path / "x.json"
    p.write_text(json.dumps(data))
    with pytest.raises(UserInputError, match="missing 'status'"):
        read_audit(p)


@pytest.mark.parametrize(
    "edit, blank",
    [
        (lambda d: d["environment"].update(loracheck="0.0.0-other"), True),
        (lambda d: d["environment"].pop("loracheck"), True),
        (lambda d: [v["request"]["options"].update(gap_rtol=1e-6) for v in d["verdicts"]], False),
    ],
    ids=["other version", "no version", "other options"],
)
def test_other_version_or_options_are_recomputed_not_reused(audit_file, tmp_path, capsys, edit, blank):
    # (a file of this version is checked whole: blank certificates there are refused, see above)
    def forge(d):
        edit(d)
        for v in d["verdicts"] if blank else []:  # verdicts that would be refused if they were reused
            v["certificate"] = {}

    code, out = _rerun(audit_file, tmp_path, forge)
    assert code == 0
    assert "reused" not in capsys.readouterr().out
    again = json.loads(out.read_text())
    assert again["environment"]["loracheck"] == environment()["loracheck"]
    assert all(v["certificate"] for v in again["verdicts"])
    assert all(v["request"]["options"] == {} for v in again["verdicts"])


def test_written_verdicts_record_their_options_and_the_version(audit_file):
    data = audit_file[2]
    assert data["environment"]["loracheck"] == environment()["loracheck"]
    for v in data["verdicts"]:
        assert v["request"]["claim"] == v["claim"] and isinstance(v["request"]["options"], dict)
        assert isinstance(v["options"], dict)


# ``loracheck run``: an interrupted report.json

_RUN = ["run", "--problems", "gauss-sq-K1", "--claims", "JLR-magnitude", "--no-progress"]


@pytest.fixture(scope="module")
def run_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    assert main([*_RUN, "--out", str(out)]) == 0
    return json.loads((out / "report.json").read_text())


def _rerun_suite(run_report, tmp_path, edit):
    data = json.loads(json.dumps(run_report))
    data["complete"] = False
    edit(data)
    (tmp_path / "report.json").write_text(json.dumps(data))
    return main([*_RUN, "--out", str(tmp_path)])


def test_run_reuses_an_unedited_interrupted_report(run_report, tmp_path, capsys):
    assert _rerun_suite(run_report, tmp_path, lambda d: None) == 0
    assert "1 finished verdicts reused" in capsys.readouterr().out


def test_run_refuses_a_forged_holds_with_an_empty_certificate(run_report, tmp_path, capsys):
    def forge(d):
        d["verdicts"][0]["certificate"] = {}

    assert _rerun_suite(run_report, tmp_path, forge) == 3
    err = capsys.readouterr().err
    assert "verdict 0 (JLR-magnitude on gauss-sq-K1)" in err and "missing L0, L_star" in err
    assert "--fresh" in err


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda d: d["verdicts"][0].pop("status"), "missing 'status'"),
        (lambda d: d["verdicts"][0].update(problem="gauss-sq-K1"), "problem: expected a JSON object"),
        (lambda d: d.update(suite=[1]), r"\$.suite\[0\]: expected a JSON object"),
        (lambda d: d.update(environment=None), r"\$.environment: expected a JSON object"),
    ],
)
def test_run_refuses_a_malformed_report(run_report, tmp_path, capsys, edit, match):
    assert _rerun_suite(run_report, tmp_path, edit) == 3
    err = capsys.readouterr().err
    assert match in err.replace("\\", "") or __import__("re").search(match, err), err


def test_run_recomputes_a_report_of_another_version(run_report, tmp_path, capsys):
    def forge(d):
        d["environment"]["loracheck"] = "0.0.0-other"
        d["verdicts"][0]["certificate"] = {}

    assert _rerun_suite(run_report, tmp_path, forge) == 0
    assert "0 finished verdicts reused" in capsys.readouterr().out
    again = json.loads((tmp_path / "report.json").read_text())
    assert again["verdicts"][0]["certificate"]


def test_finished_verdicts_names_its_source(run_report):
    data = json.loads(json.dumps(run_report))
    data["verdicts"][0]["certificate"] = {}
    with pytest.raises(UserInputError, match=r"report /x/report.json: verdict 0 .*missing L0"):
        finished_verdicts(data, DEFAULT_SUITE, source="/x/report.json")


# ------------------------------------------------------------------------------------------------
# 3. The declared certificate fields are the ones the checkers write


def _assert_declared(v: Verdict) -> None:
    alts = CERTIFICATE_KEYS[v.claim].get(v.status, ())
    assert not alts or any(a <= set(v.certificate) for a in alts), (v.claim, v.status, sorted(v.certificate))


def test_declared_certificate_fields_are_written_by_the_jlr_checkers(sq):
    two = gaussian_problem(K=1, N=6, blocks=[(6, 5), (5, 4)], lam=0.05, loss="squared", seed=0)
    seen = []
    for claim in ("JLR-rank-FT", "JLR-rank-NUC", "JLR-equiv", "JLR-magnitude", "JLR-zero-saddle"):
        seen.append(CHECKERS[claim](sq))
    seen.append(CHECKERS["JLR-rank-blocks"](two))
    seen.append(CHECKERS["JLR-magnitude"](sq, factor=0.01))  # a planted false variant
    seen.append(CHECKERS["JLR-rank-NUC"](sq, rank_bound=0))
    seen.append(CHECKERS["JLR-no-spurious"](sq, n_starts=2))
    seen.append(CHECKERS["JLR-spurious-below"](sq, n_starts=2, rank=1))
    for v in seen:
        _assert_declared(v)
    statuses = {(v.claim, v.status) for v in seen}
    assert {("JLR-magnitude", "violated"), ("JLR-rank-NUC", "violated")} <= statuses
    assert sum(s == "holds" for _, s in statuses) >= 8


def test_declared_certificate_fields_are_written_by_the_wyl_and_hsk_checkers():
    t = teacher_problem(K=2, N=16, blocks=[(24, 20)], lam=0.02, teacher_rank=2, loss="squared", seed=1)
    seen = [
        CHECKERS["WYL-first-step"](t, search_starts=0),
        CHECKERS["WYL-directions"](t),
        CHECKERS["WYL-unchanged"](t),
        CHECKERS["WYL-alignment"](t),
        CHECKERS["HSK-poly-error"](HskSetting(case="C1"), L=96),
        CHECKERS["HSK-poly-error"](HskSetting(case="C1"), L=96, bound_factor=0.01),
    ]
    for v in seen:
        _assert_declared(v)
    assert [v.status for v in seen] == ["holds"] * 5 + ["violated"]


@pytest.mark.parametrize(
    "collect, match",
    [
        ({"steps": 10**12}, r"collect\['steps'\]: expected an int >= 0 \(at most 10000000\)"),
        ({"samples": 10**9}, r"collect\['samples'\]"),
        ({"seeds": [0, 0]}, r"collect\['seeds'\]: expected .*distinct"),
        ({"radius": -1.0}, r"collect\['radius'\]"),
    ],
)
def test_kkr_collect_options_are_range_checked_before_any_training(collect, match):
    import landscapes.nonlinear.problems as nl

    p = nl.matrix_sensing(m=6, n=5, N=50, rank=1, lam=0.05, seed=0)
    with pytest.raises(UserInputError, match="KKR-special option " + match):
        CHECKERS["KKR-special"](p, collect=collect)
