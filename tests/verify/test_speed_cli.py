"""`loracheck speed`: a small run end to end, resume without recomputing, and bad input."""

import json

import pytest

from verify.cli.main import main

SMALL = ["speed", "--problems", "teacher", "--inits", "vanilla", "loraga", "--seeds", "2", "--steps", "60"]
SMALL += ["--lrs", "0.03", "0.1", "--no-progress"]


def test_small_speed_run_writes_a_table_and_resumes(tmp_path, capsys):
    out = tmp_path / "r"
    code = main(SMALL + ["--out", str(out)])
    text = capsys.readouterr().out
    assert code in (0, 1, 2)
    data = json.loads((out / "speed.json").read_text())
    assert (data["format"], data["version"]) == ("loracheck.speed", 1) and data["complete"]
    entry = data["problems"]["teacher"]
    assert len(entry["runs"]) == 2 * 2 * 2
    assert set(entry["table"]) == {"vanilla", "loraga"} and entry["verdict"]["claim"] == "WYL-speed"
    assert "WYL-speed:" in text and "loraga" in text and "to 99%" in text
    # LoRA-GA's G is the full gradient here (N = 16 <= 128): seed 1 repeats seed 0's runs
    ga = {(r["seed"], r["lr"]): r for r in entry["runs"] if r["init"] == "loraga"}
    assert all(ga[(1, lr)]["same_as_seed"] == 0 for lr in (0.03, 0.1))
    assert all(r["same_as_seed"] is None for r in entry["runs"] if r["init"] == "vanilla")
    assert entry["table"]["loraga"]["identical_across_seeds"]
    assert not entry["table"]["vanilla"]["identical_across_seeds"]
    # every run measured against the certified optimum of its own (shifted) problem
    for r in entry["runs"]:
        assert r["optimum_rel_gap"] <= 1e-9 and r["final_progress"] <= 1.0 + 1e-6
    # a second run with the same configuration reuses the finished runs
    before = [(r["init"], r["seed"], r["lr"], r["seconds"]) for r in entry["runs"]]
    assert main(SMALL + ["--out", str(out)]) == code
    again = json.loads((out / "speed.json").read_text())["problems"]["teacher"]["runs"]
    assert [(r["init"], r["seed"], r["lr"], r["seconds"]) for r in again] == before
    # --fresh recomputes
    main(SMALL + ["--out", str(out), "--fresh"])
    fresh = json.loads((out / "speed.json").read_text())["problems"]["teacher"]["runs"]
    assert [(r["init"], r["seed"], r["lr"]) for r in fresh] == [b[:3] for b in before]
    assert [r["seconds"] for r in fresh] != [b[3] for b in before]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--problems", "mnist"], "--problems: expected names from teacher, features, minilm"),
        (["--inits", "lora-ga"], "--inits: expected names from"),
        (["--rank", "0"], "--rank: expected an int in [1, 4096], got '0'"),
        (["--lrs", "-1"], "--lrs: expected a finite number > 0, got '-1'"),
        (["--lrs", "inf"], "--lrs: expected a finite number > 0, got 'inf'"),
        (["--seeds", str(10**9)], "--seeds: expected an int in [1, 10000]"),
        (["--rank", "17"], "rank: expected 2 r <= min(m, n) = 32 on block 0 of teacher, got r = 17"),
    ],
)
def test_bad_input_exits_3(extra, message, tmp_path, capsys):
    assert main(["speed", "--out", str(tmp_path / "x"), *extra]) == 3
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_other_configuration_is_not_overwritten(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(SMALL[:-4] + ["--lrs", "0.1", "--no-progress", "--out", str(out)]) in (0, 1, 2)
    assert main(SMALL + ["--out", str(out)]) == 3
    assert "holds runs of another configuration" in capsys.readouterr().err


def test_foreign_output_file_is_refused(tmp_path, capsys):
    out = tmp_path / "r"
    out.mkdir()
    (out / "speed.json").write_text('{"format": "something else"}')
    assert main(SMALL + ["--out", str(out)]) == 3
    err = capsys.readouterr().err
    assert "out: expected a file of format 'loracheck.speed', version 1" in err
    assert "got format 'something else', version None; use fresh" in err


def test_resume_reuses_deterministic_runs_by_their_stored_init_hash(tmp_path):
    out = tmp_path / "r"
    assert main(SMALL + ["--out", str(out)]) in (0, 1, 2)
    path = out / "speed.json"
    data = json.loads(path.read_text())
    entry = data["problems"]["teacher"]
    # drop LoRA-GA's seed-1 runs and the table, as an interrupted run would have left them
    entry["runs"] = [r for r in entry["runs"] if not (r["init"] == "loraga" and r["seed"] == 1)]
    del entry["table"], entry["verdict"]
    data["complete"] = False
    path.write_text(json.dumps(data))
    assert main(SMALL + ["--out", str(out)]) in (0, 1, 2)
    again = json.loads(path.read_text())["problems"]["teacher"]["runs"]
    redone = [r for r in again if r["init"] == "loraga" and r["seed"] == 1]
    assert len(redone) == 2 and all(r["same_as_seed"] == 0 and r["seconds"] == 0.0 for r in redone)


def test_a_shared_memory_does_not_mix_scales():
    from verify.run.suite import ProblemSpec, build_problem
    from verify.wyl.speed import SPEED_PROBLEMS, speed_runs

    gen, kwargs = SPEED_PROBLEMS["teacher"]
    p = build_problem(ProblemSpec("teacher", gen, dict(kwargs), ()))
    memo: dict = {}
    a = speed_runs(p, inits=("loraga",), seeds=(0,), lrs=(0.1,), steps=30, reuse=memo)
    b = speed_runs(p, inits=("loraga",), seeds=(1,), lrs=(0.1,), steps=30, alpha=3.0, reuse=memo)
    c = speed_runs(p, inits=("loraga",), seeds=(2,), lrs=(0.1,), steps=30, reuse=memo)
    assert a[0].same_as_seed is None and b[0].same_as_seed is None  # another scale: recomputed
    assert c[0].same_as_seed == 0 and c[0].init_sha256 == a[0].init_sha256
