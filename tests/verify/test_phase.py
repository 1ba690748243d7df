"""Phase-diagram sweep: data shape, the bound curve, atomic output, CLI."""

import json

import pytest

from verify.cli.main import main
from verify.jlr.phase import PHASE_FORMAT, PHASE_VERSION, phase_sweep


def test_phase_sweep_small_grid(tmp_path):
    out = tmp_path / "phase.json"
    data = phase_sweep(kn=[(1, 3)], ranks=[1, 3], size=6, runs=3, out=out, progress=False)
    assert (data["format"], data["version"]) == (PHASE_FORMAT, PHASE_VERSION) == ("loracheck.phase", 1)
    assert data["complete"] and "schema" not in data
    on_disk = json.loads(out.read_text())
    assert on_disk["cells"] == json.loads(json.dumps(data["cells"]))
    cells = {c["r"]: c for c in data["cells"]}
    assert cells[3]["above_bound"] and not cells[1]["above_bound"]  # 3*4/2 = 6 > 3 >= 1
    assert data["curve"] == [{"KN": 3, "r_max": 2}]
    # above the bound every run is a certified SOSP and ends at the global minimum here
    assert cells[3]["fraction_global"] == 1.0 and cells[3]["certified_sosp"] == 3
    for c in data["cells"]:
        assert 0.0 <= c["fraction_global"] <= 1.0
        assert all(e["objective_minus_nuc"] >= -1e-9 for e in c["ends"])  # never below the optimum


def test_phase_bad_input():
    with pytest.raises(ValueError, match="ranks: expected positive ints"):
        phase_sweep(ranks=[0])
    with pytest.raises(ValueError, match="kn: expected"):
        phase_sweep(kn=[])


def test_cli_phase(tmp_path, capsys):
    rc = main(
        [
            "phase",
            "--out",
            str(tmp_path),
            "--kn",
            "1x3",
            "--ranks",
            "1",
            "3",
            "--runs",
            "2",
            "--size",
            "6",
            "--no-progress",
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "fraction of 2 runs" in text and "*" in text
    assert (tmp_path / "phase.json").is_file()
    assert main(["phase", "--kn", "1by3"]) == 3
    assert "--kn: expected pairs written KxN" in capsys.readouterr().err
