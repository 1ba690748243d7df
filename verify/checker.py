"""What every checker shares: the float64 gate and the counterexample writer.

A checker is a function ``check_<claim>(problem, *, save_dir=None, **options) -> Verdict`` in its
paper's room (:mod:`verify.jlr`, :mod:`verify.kkr`, :mod:`verify.wyl`, :mod:`verify.hsk`).  Its
certificates are float64 certificates (:func:`needs_float64` gives the honest ``inconclusive`` on
other dtypes), and a ``violated`` verdict saves its counterexample with
:func:`save_counterexample`, in the problem-file format that ``loracheck audit`` replays.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from landscapes.io import save_problem
from landscapes.problem import Problem
from verify.verdict import Verdict, jsonable

__all__ = ["needs_float64", "save_counterexample"]


def needs_float64(claim: str, problem: Problem, opts: dict[str, Any]) -> Verdict | None:
    """The default tolerances are float64 tolerances: other dtypes get an honest ``inconclusive``."""
    if problem.dtype == torch.float64:
        return None
    return Verdict(
        claim,
        "inconclusive",
        problem.fingerprint(),
        {"dtype": str(problem.dtype)},
        f"certificates need float64 (the tolerances are float64 tolerances), got {problem.dtype}",
        {},
        opts,
    )


def save_counterexample(
    problem: Problem, save_dir: str | Path | None, claim: str, point: Sequence[Tensor], opts: dict[str, Any]
) -> str | None:
    """Save a counterexample: the problem file with the point and the options that refute the claim.

    The file is the problem format of :mod:`landscapes.io` (``loracheck audit`` replays it), named
    ``CLAIM-SHA256-TAG.npz`` (the problem's fingerprint and a hash of the options), with the point's
    blocks ``D0, D1, ...``, ``claim`` and ``options_json`` as extra arrays.  ``None`` when
    ``save_dir`` is ``None`` or the problem holds an operator-form ``J`` (nothing to save).
    """
    if save_dir is None:
        return None
    fp = problem.fingerprint()
    options = json.dumps(jsonable(opts), sort_keys=True)
    tag = hashlib.sha256(options.encode()).hexdigest()[:8]
    path = Path(save_dir) / f"{claim}-{fp['sha256']}-{tag}.npz"
    extra: dict[str, Any] = {f"D{j}": d.detach().cpu().numpy() for j, d in enumerate(point)}
    extra["claim"] = np.array(claim)
    extra["options_json"] = np.array(options)
    try:
        return str(save_problem(problem, path, extra=extra))
    except ValueError:  # operator-form J: nothing to save; the verdict says so (counterexample None)
        return None
