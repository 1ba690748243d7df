"""The gallery: one PNG and one SVG per figure and an index page with captions."""

from __future__ import annotations

import json
import re
from pathlib import Path

import matplotlib.image as mpimg
import pytest

from figures.gallery import gallery_items, write_gallery
from landscapes.synthetic import gaussian_problem
from verify.jlr.rank import check_jlr_rank_nuc
from verify.report import build_report

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def results():
    P = gaussian_problem(K=1, N=20, blocks=[(12, 10)], lam=0.05, seed=0)
    report = json.loads(json.dumps(build_report([check_jlr_rank_nuc(P)])))
    phase = json.loads((ROOT / "benchmarks/results/phase_default.json").read_text())
    experiment = json.loads((ROOT / "benchmarks/results/experiment/experiment.json").read_text())
    return [phase, report, experiment]


def test_gallery_files_and_page(results, tmp_path):
    index = write_gallery(results, tmp_path / "gallery", dpi=50)
    page = index.read_text()
    names = [it.name for it in gallery_items(results)]
    assert names[0] == "phase-diagram" and any(n.startswith("spectrum-") for n in names)
    assert sum(n.startswith("training-N") for n in names) == 3
    for n in names:
        assert mpimg.imread(tmp_path / "gallery" / f"{n}.png").ndim == 3
        assert (tmp_path / "gallery" / f"{n}.svg").stat().st_size > 1000
        assert f'src="{n}.png"' in page
    assert len(re.findall("<figcaption>", page)) == len(names)
    assert "JLR-no-spurious" in page  # captions name the claim a figure supports
    assert not list((tmp_path / "gallery").glob("*.tmp"))


def test_bad_results(results, tmp_path):
    with pytest.raises(ValueError, match="expected saved data of format"):
        gallery_items([{"format": "something"}])
    with pytest.raises(TypeError, match=r"results\[0\]"):
        gallery_items(["phase.json"])  # type: ignore[list-item]
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match="out: expected a directory"):
        write_gallery(results, tmp_path / "f")
    with pytest.raises(ValueError, match="no figure"):
        write_gallery([{"format": "loracheck.report", "verdicts": []}], tmp_path / "empty")


def test_cli_figures_from_saved_results(results, tmp_path, capsys):
    from verify.cli.main import main

    paths = []
    for i, r in enumerate(results):
        p = tmp_path / f"r{i}.json"
        p.write_text(json.dumps(r))
        paths.append(str(p))
    out = tmp_path / "figs"
    assert main(["figures", "--from", *paths, "--out", str(out)]) == 0
    assert (out / "index.html").is_file() and (out / "phase-diagram.svg").is_file()
    assert "figures (PNG and SVG)" in capsys.readouterr().out


@pytest.mark.parametrize(
    "content, match",
    [
        (None, "expected an existing JSON file"),
        ("{not json", "expected JSON data"),
        ('{"format": "x"}', "format"),
    ],
)
def test_cli_figures_bad_input(tmp_path, capsys, content, match):
    from verify.cli.main import main

    src = tmp_path / "in.json"
    if content is not None:
        src.write_text(content)
    assert main(["figures", "--from", str(src), "--out", str(tmp_path / "o")]) == 3
    assert match in capsys.readouterr().err


def test_cli_normalization_only_for_default_jobs(tmp_path, capsys):
    from verify.cli.main import main

    src = ROOT / "benchmarks/results/phase_default.json"
    assert (
        main(["figures", "--from", str(src), "--normalization", "filter", "--out", str(tmp_path / "o")]) == 3
    )
    assert "--normalization" in capsys.readouterr().err
