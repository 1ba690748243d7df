"""Sweep configurations: TOML parsing, validation messages, expansion, task hashes and derived seeds."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from verify.sweep.config import SweepConfigError, config_hash, expand, load_config, parse_config
from verify.sweep.executors import ExecutorSpec, parse_executor
from verify.sweep.tasks import Param, canonical_json, derive_seed, resolve_task, task_hash

ROOT = Path(__file__).resolve().parents[2]

PHASE = """
[sweep]
task = "phase"
seed = 3
replicates = 2

[params]
size = 6

[grid]
problem = [{K = 1, N = 3}, {K = 2, N = 4}]
r = [1, 2]
init = ["gaussian", "small"]
"""


def _write(tmp_path: Path, text: str, name: str = "cfg.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_grid_expansion_order_defaults_and_hashes(tmp_path):
    cfg = load_config(_write(tmp_path, PHASE))
    assert cfg.name == "cfg" and cfg.design == "grid" and cfg.replicates == 2
    tasks = expand(cfg)
    assert len(tasks) == 2 * 2 * 2 * 2
    # outermost axis first, replicates innermost; the kind's defaults are filled in
    first, last = tasks[0].spec, tasks[-1].spec
    assert (first["K"], first["N"], first["r"], first["init"], first["replicate"]) == (1, 3, 1, "gaussian", 0)
    assert (last["K"], last["N"], last["r"], last["init"], last["replicate"]) == (2, 4, 2, "small", 1)
    assert first["loss"] == "squared" and first["lam"] == 1e-3 and first["size"] == 6 and first["seed"] == 3
    assert [t.index for t in tasks] == list(range(len(tasks)))
    assert len({t.hash for t in tasks}) == len(tasks)
    for t in tasks:
        assert t.hash == task_hash(t.spec) and t.spec_json == canonical_json(dict(t.spec))


def test_the_same_tasks_whatever_the_spelling(tmp_path):
    a = load_config(_write(tmp_path, PHASE, "a.toml"))
    # keys in another order, lam written as an int-valued float, size as an axis of one value
    b_text = PHASE.replace("[params]\nsize = 6", "[params]\nlam = 0.001").replace(
        "[grid]\n", "[grid]\nsize = [6]\n"
    )
    b = load_config(_write(tmp_path, b_text, "b.toml"))
    assert {t.hash for t in expand(a)} == {t.hash for t in expand(b)}
    assert config_hash(expand(a)) == config_hash(expand(b))
    c = load_config(_write(tmp_path, PHASE.replace("seed = 3", "seed = 4"), "c.toml"))
    assert not {t.hash for t in expand(a)} & {t.hash for t in expand(c)}


def test_float_params_accept_ints_and_hash_alike():
    p = Param("float", positive=True)
    assert p.normalize(1) == 1.0 and isinstance(p.normalize(1), float)
    spec = {"task": "phase", "lam": p.normalize(1)}
    assert task_hash(spec) == task_hash({"lam": 1.0, "task": "phase"})
    with pytest.raises(ValueError, match="expected a finite number > 0, got 0"):
        p.normalize(0)
    with pytest.raises(ValueError, match="expected an int >= 1, got True"):
        Param("int", low=1).normalize(True)


@given(
    parts=st.lists(st.one_of(st.integers(-(2**70), 2**70), st.text(max_size=8), st.booleans()), max_size=4)
)
def test_derived_seeds_are_valid_and_distinguish_parts(parts):
    s = derive_seed(*parts)
    assert 0 <= s < 2**63
    assert derive_seed(*parts, "x") != s  # one more part: another seed (a 63-bit collision is negligible)


def test_derived_seeds_do_not_depend_on_the_process():
    # Python's own hash() of strings changes with PYTHONHASHSEED; derived seeds must not.
    # (verify/taskkind.py loaded on its own: the package's __init__ would import torch, seconds per process)
    code = (
        "import importlib.util as u; s = u.spec_from_file_location('t', 'verify/taskkind.py'); "
        "import sys; m = sys.modules['t'] = u.module_from_spec(s); s.loader.exec_module(m); "
        "print(m.derive_seed('phase.problem', 0, 1, 3, 'squared', 1e-3))"
    )
    outs = set()
    for hs in ("1", "2"):
        r = subprocess.run(
            [sys.executable, "-c", code],
            cwd=ROOT,
            env=dict(os.environ, PYTHONHASHSEED=hs, PYTHONPATH=str(ROOT)),
            capture_output=True,
            text=True,
            check=True,
        )
        outs.add(int(r.stdout))
    assert outs == {derive_seed("phase.problem", 0, 1, 3, "squared", 1e-3)}


def test_random_design_is_deterministic_and_in_range(tmp_path):
    text = """
[sweep]
task = "tests.sweep_tasks:square"
seed = 1
samples = 200

[random]
x = {low = -3, high = 3}
lam = {low = 1e-4, high = 1e-1, log = true}
u = {low = 0.5, high = 2.5}
kind = ["a", "b", "c"]
"""
    a = expand(load_config(_write(tmp_path, text)))
    b = expand(load_config(_write(tmp_path, text, "again.toml")))
    assert [t.hash for t in a] == [t.hash for t in b]
    xs = [t.spec["x"] for t in a]
    assert all(isinstance(x, int) and -3 <= x <= 3 for x in xs) and set(xs) == set(range(-3, 4))
    lams = [t.spec["lam"] for t in a]
    assert all(1e-4 <= v <= 1e-1 for v in lams)
    # log-uniform: about half of the draws below the geometric midpoint 10^-2.5
    assert 70 <= sum(v < 10**-2.5 for v in lams) <= 130
    assert all(0.5 <= t.spec["u"] < 2.5 for t in a)
    assert {t.spec["kind"] for t in a} == {"a", "b", "c"}
    assert [t.spec["sample"] for t in a] == list(range(200))
    other = expand(load_config(_write(tmp_path, text.replace("seed = 1", "seed = 2"), "other.toml")))
    assert [t.spec["x"] for t in other] != xs


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "[sweep]\ntask = 'phase'\n[grid]\nK = [1]\nN = [3]\nr = [1]\n[extra]\na = 1\n",
            "unknown section [extra]",
        ),
        ("[sweep]\ntask = 'phase'\nrepeats = 2\n", "[sweep] unknown key 'repeats'"),
        ("[params]\nsize = 6\n", "missing section [sweep]"),
        ("[sweep]\nseed = 1\n", "[sweep] task: missing"),
        ("[sweep]\ntask = 'nosuchtask'\n", "task: expected a built-in task kind"),
        ("[sweep]\ntask = 'nosuchmodule_xyz:f'\n", "task: cannot import 'nosuchmodule_xyz:f'"),
        ("[sweep]\ntask = 'phase'\nseed = -1\n", "[sweep] seed: expected an int >= 0, got -1"),
        ("[sweep]\ntask = 'phase'\nreplicates = 1.5\n", "[sweep] replicates: expected an int >= 1, got 1.5"),
        (
            "[sweep]\ntask = 'phase'\n[grid]\nK = [1]\nN = [3]\nrank = [1]\n",
            "[grid] rank: unknown parameter 'rank' of task 'phase'; expected one of K, N, r",
        ),
        (
            "[sweep]\ntask = 'phase'\n[grid]\nK = [1]\nN = [3]\nr = [1, 0]\n",
            "[grid] r[1]: expected an int >= 1, got 0",
        ),
        (
            "[sweep]\ntask = 'phase'\n[params]\nloss = 'hinge'\n[grid]\nK = [1]\nN = [3]\nr = [1]\n",
            "[params] loss: expected one of 'squared', 'logistic', 'cross_entropy', got 'hinge'",
        ),
        (
            "[sweep]\ntask = 'phase'\n[params]\nlam = '1e-3'\n[grid]\nK = [1]\nN = [3]\nr = [1]\n",
            "[params] lam: expected a finite number > 0, got '1e-3'",
        ),
        ("[sweep]\ntask = 'phase'\n[grid]\nK = [1]\nr = [1]\n", "needs the parameter(s) N"),
        (
            "[sweep]\ntask = 'phase'\n[grid]\nK = [1]\nN = [3]\nr = []\n",
            "[grid] r: expected a non-empty array",
        ),
        (
            "[sweep]\ntask = 'phase'\n[params]\nK = 1\n[grid]\nK = [1]\nN = [3]\nr = [1]\n",
            "parameter 'K' is set twice (also in [params] K)",
        ),
        (
            "[sweep]\ntask = 'phase'\n[params]\nsize = 4\n[grid]\nK = [1]\nN = [3]\nr = [5]\n",
            "K=1, N=3, r=5): r: expected at most size = 4, got 5",
        ),
        (
            "[sweep]\ntask = 'phase'\n[params]\nloss = 'cross_entropy'\n[grid]\nK = [1]\nN = [3]\nr = [1]\n",
            "K: cross_entropy needs K >= 2, got 1",
        ),
        (
            "[sweep]\ntask = 'phase'\n[grid]\nproblem = [{K = 1, N = 3}, {K = 2}]\nr = [1]\n",
            "[grid] problem[1]: expected the keys K, N (as in [grid] problem[0]), got K",
        ),
        ("[sweep]\ntask = 'phase'\n[grid]\nK = [1, 1]\nN = [3]\nr = [1]\n", "task 1 repeats task 0"),
        ("[sweep]\ntask = 'phase'\n[grid]\nseed = [1]\n", "'seed' is set by the sweep itself"),
        (
            "[sweep]\ntask = 'phase'\n[grid]\nK = [1]\n[random]\nN = [3]\n",
            "expected either [grid] or [random]",
        ),
        ("[sweep]\ntask = 'phase'\n[random]\nK = [1]\n", "[sweep] samples: missing"),
        (
            "[sweep]\ntask = 'phase'\nsamples = 3\n[grid]\nK = [1]\n",
            "samples: applies to a [random] design only",
        ),
        (
            "[sweep]\ntask = 'phase'\nsamples = 2\n[random]\nK = [1]\nr = [1]\nN = {low = 5, high = 2}\n",
            "[random] N: expected low < high",
        ),
        (
            "[sweep]\ntask = 'phase'\nsamples = 2\n[random]\nK = [1]\nr = [1]\nN = {low = 2, top = 5}\n",
            "[random] N: expected a range table {low = a, high = b[, log = true]}",
        ),
        (
            "[sweep]\ntask = 'phase'\nsamples = 2\n[random]\nK = [1]\nN = [3]\nr = [1]\n"
            "lam = {low = 0.0, high = 1.0, log = true}\n",
            "[random] lam: a log range needs low > 0",
        ),
        (
            "[sweep]\ntask = 'tests.sweep_tasks:square'\n[params]\nwhen = 1979-05-27\n",
            "[params] when: expected a",
        ),
        ("[sweep\ntask = 'phase'\n", "not valid TOML"),
        ("[sweep]\ntask = 'phase'\nname = '../up'\n", "[sweep] name: expected letters, digits"),
        (
            "[sweep]\ntask = 'phase'\nsamples = 2\n[random]\nK = [1]\nr = [1]\n"
            "N = {low = 2, high = 9, log = true}\n",
            "[random] N: log = true draws floats, but 'N' takes ints",
        ),
    ],
)
def test_bad_configs_are_named(tmp_path, text, message):
    with pytest.raises(SweepConfigError) as exc:
        load_config(_write(tmp_path, text))
    assert message in str(exc.value)
    assert str(tmp_path / "cfg.toml") in str(exc.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(SweepConfigError, match="expected an existing TOML file"):
        load_config(tmp_path / "nope.toml")


def test_parse_config_from_a_mapping_and_user_tasks_are_unchecked():
    cfg = parse_config(
        {"sweep": {"task": "tests.sweep_tasks:square", "replicates": 1}, "grid": {"x": [1, 2, 3]}},
        source="inline",
    )
    assert [t.spec["x"] for t in expand(cfg)] == [1, 2, 3]
    assert resolve_task("tests.sweep_tasks:square").params is None
    with pytest.raises(ValueError, match="task: cannot import 'tests.sweep_tasks:nope'"):
        parse_config({"sweep": {"task": "tests.sweep_tasks:nope"}})


def test_the_example_config_expands_to_the_phase_grid():
    cfg = load_config(ROOT / "examples" / "sweep-phase.toml")
    tasks = expand(cfg)
    assert cfg.task == "phase" and len(tasks) == 6 * 8 * 4 * 2
    assert {(t.spec["K"], t.spec["N"]) for t in tasks} == {(1, 3), (1, 6), (1, 10), (1, 15), (2, 10), (1, 28)}


@pytest.mark.parametrize(
    ("spec", "parsed"),
    [
        ("serial", ExecutorSpec("serial")),
        ("process", ExecutorSpec("process")),
        ("process:3", ExecutorSpec("process", workers=3)),
        ("dask", ExecutorSpec("dask-local")),
        ("dask:2", ExecutorSpec("dask-local", workers=2)),
        ("dask://10.0.0.5:8786", ExecutorSpec("dask", address="10.0.0.5:8786")),
        ("dask://scheduler.example:8786", ExecutorSpec("dask", address="scheduler.example:8786")),
    ],
)
def test_executor_specs(spec, parsed):
    assert parse_executor(spec) == parsed
    assert str(parsed) == spec


@pytest.mark.parametrize(
    "spec", ["threads", "process:0", "process:x", "dask://host", "dask://host:70000", ""]
)
def test_bad_executor_specs(spec):
    with pytest.raises(ValueError, match="executor: expected"):
        parse_executor(spec)
