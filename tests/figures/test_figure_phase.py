"""The phase-diagram figure: drawn from saved data, and the drawn data equals the data."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure

from figures.phase import plot_phase_diagram

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "benchmarks" / "results" / "phase_default.json"


@pytest.fixture(scope="module")
def phase():
    return json.loads(DATA.read_text())


def test_files_are_valid_images(phase, tmp_path):
    fig = plot_phase_diagram(phase)
    fig.savefig(tmp_path / "phase.png", dpi=80)
    fig.savefig(tmp_path / "phase.svg")
    img = mpimg.imread(tmp_path / "phase.png")
    assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 300
    assert (tmp_path / "phase.svg").read_text().lstrip().startswith("<?xml")


def test_axes_are_labelled(phase):
    ax = plot_phase_diagram(phase).axes[0]
    assert ax.get_xlabel() == "LoRA rank r" and "KN" in ax.get_ylabel() and ax.get_title()


def test_plotted_data_equal_the_saved_data(phase):
    fig = plot_phase_diagram(phase)
    ax = fig.axes[0]
    cells = phase["cells"]
    kns = sorted({c["KN"] for c in cells})
    sc = ax.collections[0]
    xy = sc.get_offsets()
    # positions: (r, row of KN); colours: the fraction of global runs
    assert np.array_equal(xy[:, 0], [c["r"] for c in cells])
    assert np.array_equal(xy[:, 1], [kns.index(c["KN"]) for c in cells])
    assert np.allclose(sc.get_array(), [c["fraction_global"] for c in cells])
    edges = sc.get_edgecolors()
    black = to_rgba("black")
    assert [tuple(e) == black for e in edges] == [c["above_bound"] for c in cells]
    # the labels are global/runs
    texts = [t.get_text() for t in ax.texts if "/" in t.get_text() and len(t.get_text()) < 8]
    assert texts == [f"{c['global']}/{c['runs']}" for c in cells]
    # the hatched cells are those below the NUC rank
    hatched = ax.collections[1].get_offsets()
    below = [(c["r"], kns.index(c["KN"])) for c in cells if c["r"] < c["nuc_rank"]]
    assert sorted(map(tuple, hatched.tolist())) == sorted(below)
    # the curve: at integer r with r(r+1)/2 one of the KN values, it passes through that row
    line = ax.lines[0]
    xs, ys = line.get_data()
    for r in range(1, 9):
        kn = r * (r + 1) // 2
        if kn in kns:
            i = int(np.argmin(np.abs(xs - r)))
            assert abs(ys[i] - kns.index(kn)) < 0.05


def test_draws_into_given_axes(phase):
    fig = Figure()
    ax = fig.add_subplot()
    assert plot_phase_diagram(phase, ax=ax) is fig


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda d: d.update(format="other"), "expected format 'loracheck.phase', version 1, got format"),
        (lambda d: d.update(cells=[]), "non-empty list"),
        (lambda d: d["cells"][0].pop("fraction_global"), r"cells'\]\[0\]: missing fraction_global"),
    ],
)
def test_bad_data(phase, change, match):
    d = copy.deepcopy(phase)
    change(d)
    with pytest.raises(ValueError, match=match):
        plot_phase_diagram(d)
    with pytest.raises(TypeError, match="result"):
        plot_phase_diagram([1, 2])  # type: ignore[arg-type]
