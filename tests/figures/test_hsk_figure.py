"""The HSK rank figure: drawn from a real HSK-above verdict, one line per ratio at the saved ranks."""

import numpy as np
import pytest
from matplotlib.figure import Figure

from figures import gallery_items, plot_hsk_ranks
from landscapes.attention import HskSetting
from verify.hsk import check_hsk_above
from verify.report import build_report


@pytest.fixture(scope="module")
def verdict():
    v = check_hsk_above(HskSetting(), lengths=(32, 64, 128), ratios=(0.25, 2.0))
    return v.to_dict()


def test_lines_sit_at_the_saved_ranks(verdict, tmp_path):
    fig = plot_hsk_ranks(verdict)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    grid = verdict["certificate"]["grid"]
    lines = [ln for ln in ax.get_lines() if ln.get_label().startswith("Γ²/log L")]
    assert len(lines) == 2
    for ln, c in zip(lines, (0.25, 2.0)):
        rows = sorted((r for r in grid if r["ratio"] == c), key=lambda r: r["L"])
        assert np.allclose(ln.get_xdata(), [r["L"] for r in rows])
        assert np.allclose(ln.get_ydata(), [max(r["rank_softmax"], 1) for r in rows])
        assert f"{c * c:.3g}" in ln.get_label()
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
