"""A gallery: every figure that saved results support, as PNG and SVG, with an ``index.html`` page.

Results are the JSON data that the commands write (recognized by their ``format`` field, each at
version 1; files written before the ``version`` key, e.g. ``"schema": "loracheck.phase/1"``, are
drawn too):

* ``loracheck.phase`` (``loracheck phase``): the phase diagram;
* ``loracheck.report`` (``loracheck run``): the singular values of every certified rank-claim
  solution against ``r_max``;
* ``loracheck.experiment`` (``loracheck experiment``): training curves per training-set size;
* ``loracheck.slices`` (:func:`verify.jlr.slices.landscape_slices`): 1-D and 2-D slices of the LoRA
  objective;
* ``loracheck.speed`` (``loracheck speed``): the remaining way to the optimum per LoRA init;
* ``loracheck.kkr`` (``loracheck kkr``): where training ends without linearization, per
  configuration.

Every file is written atomically (a temporary file, then ``os.replace``), so an interrupted
gallery never leaves a half-written image or page.
"""

from __future__ import annotations

import html
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from figures.hsk import plot_hsk_ranks
from figures.kkr import KKR_FORMAT, plot_kkr
from figures.phase import PHASE_FORMAT, plot_phase_diagram
from figures.slices import SLICES_FORMAT, plot_hessian_spectrum, plot_slice_2d, plot_slices_1d
from figures.spectrum import RANK_CLAIMS, plot_singular_values
from figures.speed import SPEED_FORMAT, plot_speed
from figures.training import EXPERIMENT_FORMAT, plot_training_curves
from figures.validate import REPORT_FORMAT, check_result
from theory.atomic import atomic_write
from theory.errors import UserInputError, shown

__all__ = ["GalleryItem", "gallery_items", "write_gallery", "result_kind", "KINDS"]


@dataclass(frozen=True)
class GalleryItem:
    """One figure of the gallery: a file stem, the figure, and a caption (what it shows, which claim)."""

    name: str
    figure: Figure
    caption: str


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in text).strip("-").lower()


KINDS = (PHASE_FORMAT, REPORT_FORMAT, EXPERIMENT_FORMAT, SLICES_FORMAT, SPEED_FORMAT, KKR_FORMAT)


def result_kind(result: Mapping[str, Any]) -> str:
    """The format of saved results, after checking every field the gallery's figures read.

    Raises :class:`~theory.errors.UserInputError` (a ``ValueError``; ``InputTypeError`` for data
    that is not a dict) for a format the gallery cannot draw or data it cannot draw (see
    :func:`figures.validate.check_result`); draws nothing.
    """
    return check_result(result, "result")


def gallery_items(results: Iterable[Mapping[str, Any]]) -> list[GalleryItem]:
    """The figures supported by ``results`` (see the module docstring); unknown formats are an error."""
    results = list(results)
    kinds = [check_result(res, f"results[{k}]") for k, res in enumerate(results)]  # all, before drawing
    items: list[GalleryItem] = []
    for res, kind in zip(results, kinds):
        items += _ITEMS[kind](res)
    return items


def _phase_items(res: Mapping[str, Any]) -> list[GalleryItem]:
    items: list[GalleryItem] = []
    items.append(
        GalleryItem(
            "phase-diagram",
            plot_phase_diagram(res),
            "Fraction of LoRA trainings (diverse starts) that end at the certified global minimum, "
            "per LoRA rank r and number of predictions KN. Above the curve r(r+1)/2 = KN [JLR24] "
            "guarantee no spurious local minima (JLR-no-spurious); below the NUC minimizer's rank no "
            "rank-r point can reach the optimum.",
        )
    )
    return items


def _report_items(res: Mapping[str, Any]) -> list[GalleryItem]:
    items: list[GalleryItem] = []
    for v in res.get("verdicts", []):
        if v.get("claim") == "HSK-above" and v.get("certificate", {}).get("grid"):
            name = v.get("problem", {}).get("name", "attention")
            items.append(
                GalleryItem(
                    f"hsk-ranks-{_slug(str(name))}",
                    plot_hsk_ranks(v),
                    f"Certified lower (solid) and upper (dashed) bounds on the max-entry eps-rank of "
                    f"exp(S) against L on {name}, one line per entry bound Gamma^2 / log L [HSK24]. "
                    "The hardness claim is worst-case and SETH-conditional: the rank a fast route "
                    "would need is evidence, not a proof. "
                    f"HSK-above: {v['status']}"
                    + (
                        f" (consistent: {v['certificate']['consistent']})."
                        if "consistent" in v["certificate"]
                        else " (numerical evidence)."
                    ),
                )
            )
        if v.get("claim") in RANK_CLAIMS and "singular_values" in v.get("certificate", {}):
            name = v.get("problem", {}).get("name", "problem")
            items.append(
                GalleryItem(
                    f"spectrum-{_slug(v['claim'])}-{_slug(str(name))}",
                    plot_singular_values(v),
                    f"Singular values of the certified solution of {v['claim']} on {name} "
                    f"(status {v['status']}); the rank bound r_max = "
                    f"{v['certificate']['r_max']} is the dashed line [JLR24].",
                )
            )
    return items


def _experiment_items(res: Mapping[str, Any]) -> list[GalleryItem]:
    items: list[GalleryItem] = []
    for run in res.get("runs", []):
        if run.get("lora"):
            items.append(
                GalleryItem(
                    f"training-N{run['N']}",
                    plot_training_curves(res, N=run["N"]),
                    f"Training objective over Adam steps for N = {run['N']}: LoRA at several ranks "
                    "(solid: above the bound) approaches the certified NUC optimum, the value of a "
                    "global minimum (JLR-gd, JLR-equiv); full fine-tuning minimizes its own ridge "
                    "objective.",
                )
            )
    return items


def _speed_items(res: Mapping[str, Any]) -> list[GalleryItem]:
    items: list[GalleryItem] = []
    for pname, entry in res.get("problems", {}).items():
        if entry.get("table"):
            v = entry.get("verdict", {})
            items.append(
                GalleryItem(
                    f"speed-{_slug(pname)}",
                    plot_speed(res, pname),
                    "Remaining fraction of the way to the certified optimum over Adam steps on "
                    f"{pname}, one line per LoRA init at its best learning rate (median over seeds, "
                    "band: range). "
                    f"WYL-speed (LoRA-GA vs vanilla): {v.get('status', 'n/a')}.",
                )
            )
    return items


def _kkr_items(res: Mapping[str, Any]) -> list[GalleryItem]:
    items: list[GalleryItem] = []
    for cname, entry in res.get("configurations", {}).items():
        if entry.get("table"):
            verdicts = ", ".join(
                f"{c} {v.get('status', 'n/a')}" for c, v in entry.get("verdicts", {}).items()
            )
            items.append(
                GalleryItem(
                    f"kkr-{_slug(cname)}",
                    plot_kkr(res, cname),
                    f"End points of LoRA training without linearization on {cname}: norm against "
                    "the penalized value above the reference minimum; shape = init, colour = class "
                    f"(global, spurious, rank-limited, no SOSP certificate) [KKR25]. {verdicts}.",
                )
            )
    return items


def _slices_items(res: Mapping[str, Any]) -> list[GalleryItem]:
    items: list[GalleryItem] = []
    items.append(
        GalleryItem(
            "slices-1d",
            plot_slices_1d(res),
            "The LoRA objective minus its certified global optimum along lines: through the "
            "strict saddle at U = V = 0 along its most negative curvature (JLR-zero-saddle), "
            "through a trained point along a random and its flattest direction, and from a random "
            "start to the trained point. Directions normalized LoRA-aware: step 1 = each "
            "factor's size.",
        )
    )
    if res.get("hessian_spectra"):
        items.append(
            GalleryItem(
                "hessian-spectrum",
                plot_hessian_spectrum(res),
                "Eigenvalues of the LoRA objective's Hessian at U = V = 0 (negative ones in red: a "
                "strict saddle, with the closed-form lambda_min = lam - ||grad L(0)||_op dashed, "
                "JLR-zero-saddle) and at a trained point (no negative eigenvalue: a second-order "
                "stationary point, global by JLR-no-spurious).",
            )
        )
    for i, s2 in enumerate(res["slices_2d"]):
        items.append(
            GalleryItem(
                f"slice-2d-{_slug(s2['center'])}",
                plot_slice_2d(res, i),
                f"2-D slice of the LoRA objective {s2['label']}"
                + (
                    ": the saddle shape of U = V = 0 (JLR-zero-saddle)."
                    if s2["center"] == "zero"
                    else ": a basin around a certified global minimizer (JLR-no-spurious, JLR-equiv)."
                ),
            )
        )
    return items


_ITEMS: dict[str, Callable[[Mapping[str, Any]], list[GalleryItem]]] = {
    PHASE_FORMAT: _phase_items,
    REPORT_FORMAT: _report_items,
    EXPERIMENT_FORMAT: _experiment_items,
    SPEED_FORMAT: _speed_items,
    KKR_FORMAT: _kkr_items,
    SLICES_FORMAT: _slices_items,
}


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (or cannot be examined): not the same file
        return False


def _check_inputs_kept(outputs: Sequence[Path], inputs: Sequence[str | os.PathLike[str]]) -> None:
    """Refuse outputs that are one of the input result files: writing them would destroy the input."""
    if isinstance(inputs, (str, bytes, os.PathLike)):  # one path, not a list of its characters
        inputs = [inputs]
    for src in inputs:
        src_path = Path(os.fsdecode(src))
        for path in outputs:
            if _same_file(src_path, path):
                raise UserInputError(
                    f"inputs: the result file {shown(os.fspath(src), 300)} (--from) is the gallery's output "
                    f"file {shown(str(path), 300)}, which would overwrite it; expected an input outside the "
                    "output directory or under another name (or another --out)"
                )


def write_gallery(
    results: Iterable[Mapping[str, Any]],
    out: str | os.PathLike[str],
    *,
    dpi: int = 120,
    inputs: Sequence[str | os.PathLike[str]] = (),
) -> Path:
    """Write ``NAME.png`` and ``NAME.svg`` for every figure, then ``index.html``; returns its path.

    ``inputs``: the files the results were read from. An output path that is the same file as one
    of them is refused (:class:`~theory.errors.UserInputError`) before anything is written.
    """
    out_dir = Path(out)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserInputError(f"out: expected a directory, got an existing file {str(out_dir)!r}")
    items = gallery_items(results)
    if not items:
        raise UserInputError("results: no figure can be drawn from these results")
    names = [it.name for it in items]
    if len(set(names)) != len(names):
        raise UserInputError(f"results: two figures would share a file name: {sorted(names)}")
    index = out_dir / "index.html"
    outputs = [out_dir / f"{n}.{ext}" for n in names for ext in ("png", "svg")] + [index]
    _check_inputs_kept(outputs, inputs)
    out_dir.mkdir(parents=True, exist_ok=True)
    for it in items:
        atomic_write(out_dir / f"{it.name}.png", partial(it.figure.savefig, format="png", dpi=dpi))
        atomic_write(out_dir / f"{it.name}.svg", partial(it.figure.savefig, format="svg"))
    rows = "\n".join(
        f'<figure id="{html.escape(it.name)}"><a href="{html.escape(it.name)}.svg">'
        f'<img src="{html.escape(it.name)}.png" alt="{html.escape(it.caption)}"></a>'
        f"<figcaption>{html.escape(it.caption)}</figcaption></figure>"
        for it in items
    )
    page = (
        "<!doctype html>\n<html><head><meta charset='utf-8'><title>loracheck figures</title>\n"
        "<style>body{font-family:sans-serif;max-width:60em;margin:auto}img{max-width:100%}"
        "figure{margin:2em 0}figcaption{color:#333}</style></head><body>\n"
        "<h1>loracheck figures</h1>\n"
        "<p>Drawn from saved results; each image links to its SVG.</p>\n"
        f"{rows}\n</body></html>\n"
    )
    atomic_write(index, lambda fh: fh.write(page.encode("utf-8")))
    return index
