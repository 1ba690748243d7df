"""The command line and the report files, as a user meets them."""

import json
import os
import subprocess
import sys

import jsonschema
import pytest

from theory.claims import CLAIMS
from verify.cli.main import main
from verify.report import REPORT_SCHEMA, build_report, report_markdown, write_report
from verify.run.suite import DEFAULT_SUITE, build_problem


def test_claims_lists_every_claim(capsys):
    assert main(["claims"]) == 0
    out = capsys.readouterr().out
    assert "JLR-rank-NUC" in out and "checker" in out and "HSK-above" in out and "JLR-gen" in out
    # every claim has a checker now (JLR-gen was the last planned one)
    assert "planned" not in out and f"{len(CLAIMS)} of {len(CLAIMS)} claims have checkers." in out
    assert main(["claims", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {d["id"] for d in data if d["checker"]} >= {"JLR-rank-FT", "JLR-rank-NUC", "JLR-zero-saddle"}


def test_run_one_problem_writes_valid_reports(tmp_path, capsys):
    out = tmp_path / "rep"
    code = main(["run", "--problems", "gauss-sq-K1", "--out", str(out), "--no-progress"])
    assert code == 0
    text = capsys.readouterr().out
    assert "JLR-rank-FT" in text and "holds" in text and "rank" in text
    report = json.loads((out / "report.json").read_text())
    jsonschema.validate(report, REPORT_SCHEMA)
    assert report["complete"] is True
    assert report["counts"]["holds"] == len(report["verdicts"]) == len(DEFAULT_SUITE[0].claims)
    md = (out / "report.md").read_text()
    assert "| JLR-rank-NUC |" in md
    # no temporary files left behind; the only saved point is the spurious SOSP found below the
    # bound (JLR-spurious-below holds by exhibiting it)
    assert sorted(p.name for p in out.iterdir()) == ["counterexamples", "report.json", "report.md"]
    saved = sorted(p.name for p in (out / "counterexamples").iterdir())
    assert len(saved) == 1 and saved[0].startswith("JLR-spurious-below-") and saved[0].endswith(".npz")


def test_run_exit_code_for_inconclusive(tmp_path):
    # JLR-rank-FT on the separable cross-entropy problem has no minimizer: inconclusive -> exit 2
    from verify.report import exit_code
    from verify.run.suite import ProblemSpec, run_suite

    spec = ProblemSpec("ce", "random_features", dict(K=2, N=12, m=6, n=5, lam=0.01, seed=0), ("JLR-rank-FT",))
    verdicts = list(run_suite([spec], progress=False))
    assert [v.status for v in verdicts] == ["inconclusive"]
    assert exit_code(verdicts) == 2


@pytest.mark.parametrize(
    "argv, message",
    [
        (["run", "--claims", "JLR-nope"], "--claims: expected ids with checkers"),
        (["run", "--claims", "jlr-gen"], "--claims: expected ids with checkers"),
        (["run", "--problems", "nope"], "--problems: expected names from the suite"),
        (["run", "--threads", "0"], "--threads: expected an int in [1, 4096], got '0'"),
        (["run", "--threads", "two"], "--threads: expected an int in [1, 4096], got 'two'"),
        (["run", "--threads", str(10**9)], "--threads: expected an int in [1, 4096]"),
        (
            ["run", "--problems", "features-ce-K2", "--claims", "JLR-rank-FT"],
            "contains no (problem, claim) pair",
        ),
        (["frobnicate"], "invalid choice"),
        (["run", "--bogus"], "unrecognized arguments"),
    ],
)
def test_bad_input_exits_3_with_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        code = main(argv)
        raise SystemExit(code)
    assert exc.value.code == 3
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_out_is_a_file(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    assert main(["run", "--problems", "gauss-sq-K1", "--out", str(f)]) == 3
    assert "--out: expected a directory" in capsys.readouterr().err


def test_no_command_prints_help_and_exits_3(capsys):
    assert main([]) == 3
    assert "usage" in capsys.readouterr().out


def test_console_script_runs_in_a_subprocess(tmp_path):
    # the real entry point, as a user runs it (python -m keeps it independent of PATH)
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "verify.cli",
            "run",
            "--problems",
            "gauss-sq-K1",
            "--claims",
            "JLR-rank-NUC",
            "--out",
            str(tmp_path),
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert "1 holds, 0 violated, 0 inconclusive" in r.stdout
    r = subprocess.run(
        [sys.executable, "-m", "verify.cli", "run", "--claims", "nope"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert r.returncode == 3 and r.stderr.count("\n") <= 2 and "Traceback" not in r.stderr


def test_incomplete_report_is_marked(tmp_path):
    from verify.jlr.rank import check_jlr_magnitude

    v = check_jlr_magnitude(build_problem(DEFAULT_SUITE[0]))
    rep = build_report([v], complete=False)
    jsonschema.validate(rep, REPORT_SCHEMA)
    assert "Incomplete" in report_markdown(rep)
    j, m = write_report(rep, tmp_path)
    assert json.loads(j.read_text())["complete"] is False


def test_suite_problems_are_named_and_reproducible():
    names = [s.name for s in DEFAULT_SUITE]
    assert len(names) == len(set(names))
    a = build_problem(DEFAULT_SUITE[1]).fingerprint()
    b = build_problem(DEFAULT_SUITE[1]).fingerprint()
    assert a == b and a["name"] == DEFAULT_SUITE[1].name
