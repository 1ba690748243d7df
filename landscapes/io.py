"""Problem files: a versioned ``.npz`` format that replays a problem exactly.

Format ``loracheck.problem`` version 1 (NumPy ``.npz``, no pickled objects):

=============== ===========================================================
key             content
=============== ===========================================================
format          ``"loracheck.problem"``
version         ``1``
J               dense Jacobian ``(K N, p)`` (operator-form problems cannot be saved)
f0, y           as in :class:`~landscapes.problem.Problem`
loss            loss name
blocks          ``(b, 2)`` int array of block shapes
lam             ``(b,)`` float array
seed            int; ``has_seed`` says whether there is one
name            str
checksum        sha256 of the bytes of J, f0, y, blocks, lam (hex)
extra__<key>    optional arrays attached by the writer (e.g. a counterexample point)
=============== ===========================================================

Files are written atomically (temporary file, then ``os.replace``): a killed writer never
leaves a half-written problem file.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from landscapes.operators import DenseOperator
from landscapes.problem import Problem

__all__ = ["save_problem", "load_problem", "atomic_write", "FORMAT", "VERSION"]

FORMAT = "loracheck.problem"
VERSION = 1


def _checksum(arrays: list[np.ndarray]) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def save_problem(
    problem: Problem, path: str | os.PathLike[str], *, extra: dict[str, np.ndarray] | None = None
) -> Path:
    """Write ``problem`` (and ``extra`` arrays) to ``path`` atomically; returns the path."""
    if not isinstance(problem.J, DenseOperator):
        raise ValueError("problem: expected a dense-J problem to save, got an operator-form J")
    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"path: expected a file name ending in .npz, got {str(path)!r}")
    J = problem.J.matrix.detach().cpu().numpy()
    f0 = problem.f0.detach().cpu().numpy()
    y = problem.y.detach().cpu().numpy()
    blocks = np.array(problem.blocks, dtype=np.int64)
    lam = np.array(problem.lam, dtype=np.float64)
    data = {
        "format": np.array(FORMAT),
        "version": np.array(VERSION),
        "J": J,
        "f0": f0,
        "y": y,
        "loss": np.array(problem.loss.name),
        "blocks": blocks,
        "lam": lam,
        "seed": np.array(0 if problem.seed is None else problem.seed),
        "has_seed": np.array(problem.seed is not None),
        "name": np.array(problem.name),
        "checksum": np.array(_checksum([J, f0, y, blocks, lam])),
    }
    for k, v in (extra or {}).items():
        data[f"extra__{k}"] = np.asarray(v)
    return atomic_write(path, lambda fh: np.savez(fh, **data))  # type: ignore[arg-type]


def atomic_write(path: str | os.PathLike[str], write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write`` on a temporary file next to ``path``, then move it into place.

    ``os.replace`` is atomic on one file system: readers see the old file or the new one, and a
    killed writer leaves no half-written file (the temporary file is removed on any error).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def load_problem(path: str | os.PathLike[str]) -> tuple[Problem, dict[str, np.ndarray]]:
    """Read a problem file; returns the problem (validated as on construction) and its extras."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"path: expected an existing problem file, got {str(path)!r}")
    try:
        z = np.load(path, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is bad input
        raise ValueError(
            f"path: expected a loracheck .npz problem file, got an unreadable file ({exc})"
        ) from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise ValueError(
            f"path: expected a loracheck .npz problem file, got a single array file {str(path)!r}"
        )
    with z:
        keys = set(z.files)
        if "format" not in keys or str(z["format"]) != FORMAT:
            raise ValueError(
                f"path: expected a file of format {FORMAT!r}, "
                f"got {str(z['format']) if 'format' in keys else 'none'}"
            )
        missing = sorted(
            {"version", "J", "f0", "y", "loss", "blocks", "lam", "seed", "has_seed", "name", "checksum"}
            - keys
        )
        if missing:
            raise ValueError(f"path: expected the keys of format {FORMAT!r}; missing {', '.join(missing)}")
        version = int(z["version"])
        if version != VERSION:
            raise ValueError(f"path: expected format version {VERSION}, got {version}")
        J, f0, y = z["J"], z["f0"], z["y"]
        blocks, lam = z["blocks"], z["lam"]
        if _checksum([J, f0, y, blocks, lam]) != str(z["checksum"]):
            raise ValueError(f"path: checksum mismatch in {str(path)!r}: the file is corrupted")
        seed = int(z["seed"])
        problem = Problem(
            torch.from_numpy(J.copy()),
            torch.from_numpy(f0.copy()),
            torch.from_numpy(y.copy()),
            loss=str(z["loss"]),
            blocks=[(int(m), int(n)) for m, n in blocks],
            lam=[float(v) for v in lam],
            seed=seed if bool(z["has_seed"]) else None,
            name=str(z["name"]),
        )
        extras = {k[len("extra__") :]: z[k] for k in z.files if k.startswith("extra__")}
    return problem, extras
