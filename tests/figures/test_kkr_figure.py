"""The KKR end-point figure: drawn from a real `kkr_experiment` file, markers at the saved numbers."""

import numpy as np
import pytest
from matplotlib.figure import Figure

from figures import gallery_items, plot_kkr
from verify.kkr.experiment import kkr_experiment


@pytest.fixture(scope="module")
def kkr(tmp_path_factory):
    out = tmp_path_factory.mktemp("kkr") / "kkr.json"
    return kkr_experiment(
        ["double-well"], out=out, inits=("zero", "large"), seeds=(0, 1), samples=5, progress=False
    )


def test_markers_sit_at_the_saved_numbers(kkr, tmp_path):
    fig = plot_kkr(kkr)
    ax = fig.axes[0]
    assert ax.get_yscale() == "log" and "||X||_F" in ax.get_xlabel()
    entry = kkr["configurations"]["double-well"]
    points = np.array([c.get_offsets()[0] for c in ax.collections])
    # One marker per finished run, then the reference star.
    runs = [r for r in entry["runs"] if r["status"] == "finished"]
    assert len(points) == len(runs) + 1
    for (x, y), r in zip(points, runs):
        assert x == pytest.approx(r["frobenius"])
        assert y == pytest.approx(max(r["penalized"] - r["reference_value"], 1e-12))
    assert points[-1][0] == pytest.approx(entry["reference"]["frobenius"])
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(t.startswith("spurious") for t in labels) and any(t.startswith("global") for t in labels)
    fig.savefig(tmp_path / "k.png")
    assert (tmp_path / "k.png").stat().st_size > 10_000


def test_gallery_and_bad_input(kkr):
    items = gallery_items([kkr])
    assert [i.name for i in items] == ["kkr-double-well"] and isinstance(items[0].figure, Figure)
    assert "KKR-bias" in items[0].caption
    with pytest.raises(ValueError, match="configuration: expected one of"):
        plot_kkr(kkr, "minilm-qv")
    with pytest.raises(ValueError, match="expected format 'loracheck.kkr', version 1"):
        plot_kkr({"format": "x"})
    with pytest.raises(TypeError, match="expected the JSON data"):
        plot_kkr([])
