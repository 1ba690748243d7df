"""The singular-value figure: drawn from a saved verdict; the drawn values equal the certificate's."""

from __future__ import annotations

import json

import matplotlib.image as mpimg
import numpy as np
import pytest

from figures.spectrum import ROUNDOFF, plot_singular_values
from landscapes.synthetic import gaussian_problem
from verify.jlr.rank import check_jlr_rank_blocks, check_jlr_rank_nuc


@pytest.fixture(scope="module")
def verdicts():
    one = gaussian_problem(K=1, N=20, blocks=[(12, 10)], lam=0.05, seed=0)
    two = gaussian_problem(K=2, N=12, blocks=[(16, 16), (16, 12)], lam=[0.01, 0.02], seed=5)
    # as a report stores them: plain JSON
    return [
        json.loads(json.dumps(v.to_dict())) for v in (check_jlr_rank_nuc(one), check_jlr_rank_blocks(two))
    ]


def test_image_and_labels(verdicts, tmp_path):
    for i, v in enumerate(verdicts):
        fig = plot_singular_values(v)
        fig.savefig(tmp_path / f"sv{i}.png", dpi=70)
        assert mpimg.imread(tmp_path / f"sv{i}.png").ndim == 3
        ax = fig.axes[0]
        assert ax.get_xlabel() and ax.get_ylabel() and v["claim"] in ax.get_title()


def test_plotted_values_equal_the_certificate(verdicts):
    for v in verdicts:
        ax = plot_singular_values(v).axes[0]
        svs = v["certificate"]["singular_values"]
        top = max(max(b) for b in svs if b)
        kept = [line for line in ax.lines if line.get_linestyle() == "-"]
        for block, line in zip([b for b in svs if b], kept):
            x, y = line.get_data()
            big = [s for s in block if s >= ROUNDOFF * top]
            assert np.array_equal(y, big) and np.array_equal(x, np.arange(1, len(big) + 1))
        # the bound: a vertical line between r_max and r_max + 1
        vlines = [line for line in ax.lines if line.get_linestyle() == "--"]
        assert vlines and vlines[0].get_xdata()[0] == v["certificate"]["r_max"] + 0.5
        # round-off values sit at the floor as open markers, one per value
        n_small = sum(s < ROUNDOFF * top for b in svs for s in b)
        floor_pts = [
            line for line in ax.lines if line.get_linestyle() in ("None", "") and len(line.get_xdata())
        ]
        assert sum(len(line.get_xdata()) for line in floor_pts) == n_small


def test_bad_verdicts(verdicts):
    with pytest.raises(ValueError, match="expected a verdict of JLR-rank-NUC"):
        plot_singular_values({**verdicts[0], "claim": "JLR-magnitude"})
    with pytest.raises(ValueError, match="missing 'singular_values'"):
        plot_singular_values({**verdicts[0], "certificate": {"ranks": [1], "r_max": 3}})
    with pytest.raises(TypeError, match="verdict"):
        plot_singular_values("report.json")  # type: ignore[arg-type]
