"""`loracheck speed` resuming a damaged or forged speed.json: exit 3, or recomputed; never trusted."""

import copy
import json
import shutil

import pytest

from verify.cli.main import main

SMALL = ["speed", "--problems", "teacher", "--inits", "vanilla", "loraga", "--seeds", "2", "--steps", "20"]
SMALL += ["--lrs", "0.1", "--no-progress"]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """One finished tiny run: its directory, exit code and saved data (copied and forged by each test)."""
    out = tmp_path_factory.mktemp("speed") / "r"
    code = main(SMALL + ["--out", str(out)])
    assert code in (0, 1, 2)
    return out, code, json.loads((out / "speed.json").read_text())


def _forged(saved, tmp_path, forge):
    """A copy of the saved run directory whose speed.json went through ``forge(data)``."""
    src, _, data = saved
    out = tmp_path / "r"
    shutil.copytree(src, out)
    data = copy.deepcopy(data)
    forge(data)
    (out / "speed.json").write_text(json.dumps(data))
    return out


def _runs(d):
    return d["problems"]["teacher"]["runs"]


def _set(d, key, value, i=0):
    _runs(d)[i][key] = value


@pytest.mark.parametrize(
    "forge, field",
    [
        # the classes the resume crashed on (exit 4) before its input was checked
        (lambda d: d.update(problems=[]), "'problems': expected a JSON object, got []"),
        (lambda d: _runs(d)[0].pop("init"), "'runs'[0]: missing 'init'"),
        (lambda d: _set(d, "lr", "abc"), "'runs'[0] 'lr': expected one of the learning rates"),
        (lambda d: d["problems"]["teacher"].update(runs=5), "'runs': expected a list of runs, got 5"),
        # further fields the table, the verdict and the report read
        (lambda d: _set(d, "seed", True), "'runs'[0] 'seed': expected one of the seeds [0, 1], got True"),
        (lambda d: _set(d, "init", "lora"), "'runs'[0] 'init': expected one of ['vanilla', 'loraga']"),
        (
            lambda d: _set(d, "steps_to", {"0.9": "x", "0.99": None}),
            "'steps_to' '0.9': expected null or an int",
        ),
        (lambda d: _set(d, "curve", [[0, 1.0], "x"]), "'runs'[0] 'curve'[1]: expected a [step, progress]"),
        (lambda d: _set(d, "final_ranks", 3), "'runs'[0] 'final_ranks': expected a list of ints"),
        (lambda d: _set(d, "diverged", "no"), "'runs'[0] 'diverged': expected a bool"),
        (lambda d: _set(d, "optimum_rel_gap", [1]), "'runs'[0] 'optimum_rel_gap': expected a number"),
        (lambda d: _set(d, "surprise", 1), "'runs'[0]: expected only the fields of a run"),
        (lambda d: _runs(d).append(dict(_runs(d)[0])), "'runs'[4]: expected one run per (init, seed, lr)"),
        (lambda d: d["problems"]["teacher"].update(problem=[]), "'problem': expected a JSON object"),
        (lambda d: d.update(seconds="x"), "'seconds': expected a finite number >= 0"),
        # a problem of no configuration, with a verdict of its own, is not printed as a result
        (
            lambda d: d["problems"].update(evil=copy.deepcopy(d["problems"]["teacher"])),
            "'problems': expected only the problems ['teacher'], got 'evil'",
        ),
    ],
)
def test_malformed_saved_run_is_refused_naming_the_file_and_field(saved, tmp_path, capsys, forge, field):
    out = _forged(saved, tmp_path, forge)
    before = (out / "speed.json").read_text()
    assert main(SMALL + ["--out", str(out)]) == 3
    err = capsys.readouterr().err
    assert field in err and str(out / "speed.json") in err and "Traceback" not in err
    assert (out / "speed.json").read_text() == before  # the file is left as it was


def test_forged_verdict_is_recomputed_not_reported(saved, tmp_path, capsys):
    _, code, data = saved
    real = data["problems"]["teacher"]["verdict"]
    assert real["status"] != "violated"

    def forge(d):
        d["problems"]["teacher"]["verdict"].update(status="violated", reason="FORGED")

    out = _forged(saved, tmp_path, forge)
    capsys.readouterr()
    assert main(SMALL + ["--out", str(out)]) == code
    text = capsys.readouterr().out
    assert "FORGED" not in text and f"WYL-speed: {real['status']}: {real['reason']}" in text
    again = json.loads((out / "speed.json").read_text())["problems"]["teacher"]
    assert again["verdict"]["status"] == real["status"] and again["verdict"]["reason"] == real["reason"]
    # only the training runs were reused (not recomputed: same timings)
    assert [r["seconds"] for r in again["runs"]] == [r["seconds"] for r in _runs(data)]


def test_forged_table_is_recomputed_not_reported(saved, tmp_path, capsys):
    _, code, data = saved
    table = data["problems"]["teacher"]["table"]

    def forge(d):
        d["problems"]["teacher"]["table"]["vanilla"]["lr"] = "x"
        d["problems"]["teacher"]["table"]["loraga"]["steps_to"]["0.99"]["median"] = 1

    out = _forged(saved, tmp_path, forge)
    assert main(SMALL + ["--out", str(out)]) == code
    assert "Traceback" not in capsys.readouterr().err
    again = json.loads((out / "speed.json").read_text())["problems"]["teacher"]
    assert again["table"] == table


def test_forged_runs_change_the_recomputed_verdict(saved, tmp_path, capsys):
    """The verdict follows the saved runs (the reused part), by the checker's rule, not the file's words."""

    def forge(d):
        # every loraga run takes 1 step, every vanilla run 19 or 20, and the loraga seeds differ
        for r in _runs(d):
            fast = r["init"] == "loraga"
            r["steps_to"] = {"0.9": 1, "0.99": 1} if fast else {"0.9": 18, "0.99": 19 + r["seed"]}
            r["final_value"] = r["final_value"] + (r["seed"] if fast else 0)
        d["problems"]["teacher"]["verdict"].update(status="violated", reason="FORGED")

    out = _forged(saved, tmp_path, forge)
    capsys.readouterr()
    assert main(SMALL + ["--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "WYL-speed: holds:" in text and "FORGED" not in text
