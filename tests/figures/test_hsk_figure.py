"""The HSK rank figure: drawn from a real HSK-above verdict, lower and upper lines at the saved bounds."""

import numpy as np
import pytest
from matplotlib.figure import Figure

from figures import gallery_items, plot_hsk_ranks
from landscapes.attention import HskSetting
from verify.hsk.checkers import check_hsk_above
from verify.report import build_report


@pytest.fixture(scope="module")
def verdict():
    v = check_hsk_above(HskSetting(), lengths=(32, 64, 128), ratios=(0.25, 2.0))
    return v.to_dict()


@pytest.mark.parametrize(("family", "matrix"), [("ov", None), ("random", "softmax")])
def test_lines_sit_at_the_saved_bounds(verdict, tmp_path, family, matrix):
    fig = plot_hsk_ranks(verdict, family=family, matrix=matrix)
    key = matrix or verdict["certificate"]["matrix"]
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    grid = [r for r in verdict["certificate"]["grid"] if r["family"] == family]
    lower = [ln for ln in ax.get_lines() if ln.get_label().startswith("Γ²/log L")]
    upper = [ln for ln in ax.get_lines() if ln.get_label().startswith("upper, ")]
    assert len(lower) == len(upper) == 2
    for lo, up, c in zip(lower, upper, (0.25, 2.0)):
        rows = sorted((r for r in grid if r["ratio"] == c), key=lambda r: r["L"])
        assert np.allclose(lo.get_xdata(), [r["L"] for r in rows])
        assert np.allclose(lo.get_ydata(), [max(r[key]["lower"], 1) for r in rows])
        assert np.allclose(up.get_ydata(), [max(r[key]["upper"], 1) for r in rows])
        assert f"{c * c:.3g}" in lo.get_label()
    fig.savefig(tmp_path / "h.png")
    assert (tmp_path / "h.png").stat().st_size > 10_000


def test_gallery_and_bad_input(verdict):
    report = build_report([], suite=[], seconds=0.0)
    report["verdicts"] = [verdict]
    items = gallery_items([report])
    assert [i.name for i in items] == ["hsk-ranks-hsk"] and isinstance(items[0].figure, Figure)
    with pytest.raises(ValueError, match="HSK-above verdict"):
        plot_hsk_ranks({"claim": "HSK-below"})
    with pytest.raises(ValueError, match="matrix"):
        plot_hsk_ranks(verdict, matrix="dense")
    with pytest.raises(ValueError, match="family"):
        plot_hsk_ranks(verdict, family="gaussian")


def test_reports_from_before_the_bounds_still_draw():
    # The HSK-above verdict of a report written before the eps-rank bounds (the committed
    # benchmarks/results/hsk/report.json of 2026-11-24): grids of truncated-SVD ranks only.
    import json
    from pathlib import Path

    old = json.loads((Path(__file__).parent / "hsk_above_before_bounds.json").read_text())
    assert "family" not in old["certificate"]["grid"][0]
    fig = plot_hsk_ranks(old)
    lines = [ln for ln in fig.axes[0].get_lines() if ln.get_label().startswith("Γ²/log L")]
    rows = sorted(
        (
            r
            for r in old["certificate"]["grid"]
            if r["ratio"] == min(r["ratio"] for r in old["certificate"]["grid"])
        ),
        key=lambda r: r["L"],
    )
    assert np.allclose(lines[0].get_ydata(), [max(r["rank_softmax"], 1) for r in rows])
