"""The WYL-speed figure: drawn from a real `speed_experiment` file, lines equal to the saved data."""

import numpy as np
import pytest
from matplotlib.figure import Figure

from figures import gallery_items, plot_speed
from verify.wyl.speed import speed_experiment


@pytest.fixture(scope="module")
def speed(tmp_path_factory):
    out = tmp_path_factory.mktemp("speed") / "speed.json"
    return speed_experiment(
        ["teacher"], out=out, inits=("vanilla", "loraga"), seeds=(0, 1), lrs=(0.1,), steps=80, progress=False
    )


def test_lines_equal_the_saved_medians(speed, tmp_path):
    fig = plot_speed(speed)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert "Adam step" in ax.get_xlabel() and "1 - p(t)" in ax.get_ylabel()
    lines = {ln.get_label().split(" ")[0]: ln for ln in ax.get_lines() if not ln.get_label().startswith("_")}
    entry = speed["problems"]["teacher"]
    for init in ("vanilla", "loraga"):
        runs = [r for r in entry["runs"] if r["init"] == init]
        rest = np.maximum(1 - np.array([[p for _, p in r["curve"]] for r in runs]), 1e-6)
        assert np.allclose(lines[init].get_ydata(), np.median(rest, axis=0))
    fig.savefig(tmp_path / "s.png")
    assert (tmp_path / "s.png").stat().st_size > 10_000


def test_gallery_and_bad_input(speed):
    items = gallery_items([speed])
    assert [i.name for i in items] == ["speed-teacher"] and isinstance(items[0].figure, Figure)
    assert "WYL-speed" in items[0].caption
    with pytest.raises(ValueError, match="problem: expected one of"):
        plot_speed(speed, "minilm")
    with pytest.raises(ValueError, match="expected format 'loracheck.speed', version 1"):
        plot_speed({"format": "x"})
    with pytest.raises(TypeError, match="expected the JSON data"):
        plot_speed([])
