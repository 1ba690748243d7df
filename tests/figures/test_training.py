"""The training-curve figure: drawn from saved experiment data; the drawn curves equal the data."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest

from figures.training import plot_training_curves

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "benchmarks" / "results" / "experiment" / "experiment.json"


@pytest.fixture(scope="module")
def experiment():
    return json.loads(DATA.read_text())


def test_image_and_labels(experiment, tmp_path):
    fig = plot_training_curves(experiment)
    fig.savefig(tmp_path / "t.png", dpi=60)
    assert mpimg.imread(tmp_path / "t.png").ndim == 3
    ax = fig.axes[0]
    assert ax.get_xlabel() == "Adam step" and ax.get_ylabel() and "N = " in ax.get_title()


@pytest.mark.parametrize("N", [32, 512])
def test_curves_equal_the_data(experiment, N):
    ax = plot_training_curves(experiment, N=N).axes[0]
    run = next(r for r in experiment["runs"] if r["N"] == N)
    by_label = {line.get_label(): line for line in ax.lines}
    ft = by_label["full FT (ridge objective)"]
    assert np.array_equal(ft.get_ydata(), [p["objective"] for p in run["full_ft"]["curve"]])
    for e in run["lora"]:
        label = f"LoRA r = {e['r']}" + (" (above bound)" if e["above_bound"] else "")
        line = by_label[label]
        assert np.array_equal(line.get_xdata(), [p["step"] for p in e["curve"]])
        assert np.array_equal(line.get_ydata(), [p["objective"] for p in e["curve"]])
        assert line.get_linestyle() == ("-" if e["above_bound"] else "--")
    assert by_label["certified NUC optimum"].get_ydata()[0] == run["nuc"]["objective"]


def test_bad_data(experiment):
    with pytest.raises(ValueError, match="N: expected one of"):
        plot_training_curves(experiment, N=7)
    d = copy.deepcopy(experiment)
    d["version"] = 2
    with pytest.raises(ValueError, match="format 'loracheck.experiment', version 1, got .* version 2"):
        plot_training_curves(d)
    with pytest.raises(TypeError, match="result"):
        plot_training_curves(None)  # type: ignore[arg-type]


def test_synthetic_training_curves_are_drawn(tmp_path):
    from landscapes.synthetic import gaussian_problem
    from verify.jlr.experiment import synthetic_training_curves

    P = gaussian_problem(K=2, N=8, blocks=[(6, 6)], lam=0.02, loss="cross_entropy", seed=1)
    d = json.loads(json.dumps(synthetic_training_curves(P, ranks=[1, 6], steps=600, lr=2e-2)))
    run = d["runs"][0]
    nuc = run["nuc"]["objective"]
    for e in run["lora"]:
        # no LoRA point goes below the certified NUC optimum (its lower bound)
        assert min(p["objective"] for p in e["curve"]) >= nuc - 1e-9
    above = next(e for e in run["lora"] if e["above_bound"])
    assert above["final_minus_nuc"] <= 1e-3  # Adam gets close to the global minimum above the bound
    ax = plot_training_curves(d).axes[0]
    assert {"LoRA r = 1", "LoRA r = 6 (above bound)", "full FT (ridge objective)"} <= {
        line.get_label() for line in ax.lines
    }
    with pytest.raises(ValueError, match="ranks"):
        synthetic_training_curves(P, ranks=[0])
