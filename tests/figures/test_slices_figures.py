"""Slice data (verify.jlr.slices) and their figures: the data are the objective; the figures show the data."""

from __future__ import annotations

import json

import matplotlib.image as mpimg
import numpy as np
import pytest

from figures.gallery import gallery_items
from figures.slices import plot_hessian_spectrum, plot_slice_2d, plot_slices_1d
from landscapes.synthetic import gaussian_problem
from verify.jlr.slices import landscape_slices


@pytest.fixture(scope="module")
def data():
    P = gaussian_problem(K=1, N=6, blocks=[(5, 4)], lam=0.05, seed=1)
    return P, json.loads(json.dumps(landscape_slices(P, n_1d=11, n_2d=7)))


def test_slice_data_are_consistent(data):
    P, d = data
    assert (d["format"], d["version"]) == ("loracheck.slices", 1) and d["nuc_rel_gap"] <= 1e-10
    opt = d["nuc_optimum"]
    for s in d["slices_1d"]:
        assert len(s["alphas"]) == len(s["values"]) >= 11
        assert min(s["values"]) >= opt - 1e-9  # nothing below the certified global optimum
    zero_line = d["slices_1d"][0]
    assert zero_line["values"][5] == pytest.approx(d["zero_objective"], rel=1e-12)  # alpha = 0
    trained = d["slices_1d"][1]
    assert trained["values"][5] == pytest.approx(d["trained_objective"], rel=1e-12)
    assert d["trained_objective"] - opt <= 1e-8 * max(1.0, abs(opt))  # the trained point is global
    line = d["slices_1d"][3]
    i0, i1 = line["alphas"].index(0.0), line["alphas"].index(1.0)
    assert line["values"][i0] > line["values"][i1]  # the start is worse than the trained point
    assert line["values"][i1] == pytest.approx(d["trained_objective"], rel=1e-9)
    for s in d["slices_2d"]:
        v = np.array(s["values"])
        assert v.shape == (7, 7) and min(v.ravel()) >= opt - 1e-9
    # the zero point is a strict saddle here: along its most negative curvature F goes down
    z = np.array(d["slices_2d"][0]["values"])
    assert z[0, 3] < z[3, 3] and z[-1, 3] < z[3, 3]


def test_figures_show_the_data(data, tmp_path):
    _, d = data
    fig = plot_slices_1d(d)
    fig.savefig(tmp_path / "s1.png", dpi=50)
    assert mpimg.imread(tmp_path / "s1.png").ndim == 3
    ax = fig.axes[0]
    assert ax.get_xlabel() and ax.get_ylabel() and ax.get_yscale() == "log"
    opt = d["nuc_optimum"]
    for line, s in zip(ax.lines, d["slices_1d"]):
        assert np.array_equal(line.get_xdata(), s["alphas"])
        y = np.asarray(s["values"]) - opt
        big = y > 1e-6
        assert np.allclose(line.get_ydata()[big], y[big], rtol=1e-12)
    for i, s in enumerate(d["slices_2d"]):
        ax2 = plot_slice_2d(d, i).axes[0]
        assert s["directions"][0] in ax2.get_ylabel() and s["directions"][1] in ax2.get_xlabel()
    names = [it.name for it in gallery_items([d])]
    assert names == ["slices-1d", "hessian-spectrum", "slice-2d-zero", "slice-2d-trained"]


def test_bad_arguments(data):
    P, d = data
    with pytest.raises(ValueError, match="index"):
        plot_slice_2d(d, 5)
    with pytest.raises(ValueError, match="expected format 'loracheck.slices', version 1, got format 'x'"):
        plot_slices_1d({**d, "format": "x"})
    with pytest.raises(ValueError, match="n_1d"):
        landscape_slices(P, n_1d=2)
    with pytest.raises(ValueError, match="span"):
        landscape_slices(P, span=0.0)


def test_hessian_spectra(data):
    P, d = data
    zero, trained = d["hessian_spectra"]
    assert zero["center"] == "zero" and trained["center"] == "trained"
    # closed form at U = V = 0 (JLR-zero-saddle): lambda_min = lam - ||grad L(0)||_op
    assert min(zero["eigenvalues"]) == pytest.approx(d["zero_lambda_min_closed_form"], abs=1e-12)
    assert min(trained["eigenvalues"]) >= -1e-7  # a second-order stationary point
    fig = plot_hessian_spectrum(d)
    for ax, s in zip(fig.axes, d["hessian_spectra"]):
        counts = sum(p.get_height() for p in ax.patches)
        assert counts == len(s["eigenvalues"])
        assert ax.get_ylabel() == "count"
    assert fig.axes[-1].get_xlabel() == "eigenvalue"
