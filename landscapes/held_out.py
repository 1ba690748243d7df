r"""Held-out examples attached to a training problem (``meta["held_out"]``), for JLR-gen.

Two sources: the last examples of a synthetic problem split off (:func:`with_held_out`), or
review sentences outside the training split of ``review_problem`` (:func:`with_review_held_out`).
"""

from __future__ import annotations

from typing import Any

import torch

from landscapes.operators import DenseOperator
from landscapes.problem import Problem
from theory.errors import UserInputError

__all__ = ["with_held_out", "with_review_held_out"]


def with_held_out(problem: Problem, n_test: int) -> Problem:
    r"""Split off the *last* ``n_test`` examples as held-out data.

    Returns the training problem (the first ``N - n_test`` examples, ``J`` stored) with the
    held-out :class:`~landscapes.problem.Problem` in ``meta["held_out"]``.  Valid as a held-out
    sample when the examples are i.i.d. in their order, as in the synthetic generators of
    :mod:`landscapes.synthetic` (each example's Jacobian row and label are drawn independently
    given the problem's fixed parts, e.g. the teacher).
    """
    if isinstance(n_test, bool) or not isinstance(n_test, int) or not 1 <= n_test < problem.N:
        raise UserInputError(
            f"n_test: expected an int in [1, {problem.N - 1}] (N = {problem.N}), got {n_test!r}"
        )
    if not isinstance(problem.J, DenseOperator):
        raise UserInputError("problem: expected a stored (dense) J to split, got an operator")
    n_train = problem.N - n_test
    K, M = problem.K, problem.J.matrix
    cut = K * n_train

    def part(rows: slice, ex: slice, name: str, meta: dict[str, Any]) -> Problem:
        return Problem(
            M[rows],
            problem.f0[ex],
            problem.y[ex],
            loss=problem.loss,
            blocks=problem.blocks,
            lam=problem.lam,
            seed=problem.seed,
            name=name,
            meta=meta,
        )

    test = part(slice(cut, None), slice(n_train, None), f"{problem.name}[held-out]", {"source": "split"})
    meta = dict(
        problem.meta, held_out=test, held_out_source=f"split: the last {n_test} of {problem.N} examples"
    )
    return part(slice(0, cut), slice(0, n_train), problem.name, meta)


def with_review_held_out(problem: Problem, n_test: int) -> Problem:
    r"""Attach ``n_test`` held-out review sentences to a problem built by ``review_problem``.

    The sentences come from the same seeded, stratified split as the training sentences
    (:func:`landscapes.transformer.data.train_test_split` with ``n_test``; disjoint from them), are encoded by
    the same model, targets, pooling and random head (checked: the rebuilt encoder reproduces
    ``f0`` on the first training sentences), and their linearized logits
    :math:`f_0 + J\operatorname{vec}D` use the operator form (``J`` of the held-out sentences is
    never stored).
    """
    from landscapes.transformer.data import load_reviews, train_test_split
    from landscapes.transformer.encoder import LinearizedEncoder, load_encoder

    meta = problem.meta
    need = ("data", "model_path", "targets", "pooling", "head", "N", "K", "dtype", "split_seed")
    if any(k not in meta for k in need) or meta.get("data") != "reviews":
        raise UserInputError(
            f"problem: expected a problem made by review_problem (meta with {', '.join(need)}), "
            f"got meta keys {sorted(meta)}"
        )
    if meta["head"] != "random":
        raise UserInputError(f"problem: only the random head can be rebuilt, got head {meta['head']!r}")
    if isinstance(n_test, bool) or not isinstance(n_test, int) or n_test < 1:
        raise UserInputError(f"n_test: expected a positive int, got {n_test!r}")
    dtype = getattr(torch, str(meta["dtype"]))
    train, test = train_test_split(
        load_reviews(), n_train=int(meta["N"]), n_test=n_test, seed=int(meta["split_seed"])
    )
    net, tok = load_encoder(meta["model_path"], dtype=dtype)
    opts: dict[str, Any] = dict(
        K=int(meta["K"]),
        targets=list(meta["targets"]),
        pooling=meta["pooling"],
        max_length=int(meta["max_length"]) if meta.get("max_length") is not None else None,
        dtype=dtype,
    )
    n_chk = min(8, problem.N)
    chk = LinearizedEncoder(net, tok, list(train.texts[:n_chk]), **opts).f0().to(problem.f0.device)
    err = float((chk - problem.f0[:n_chk]).abs().max())
    if err > 1e-6 * max(1.0, float(problem.f0.abs().max())):
        raise UserInputError(f"problem: the rebuilt encoder's outputs differ from problem.f0 by {err:.3g}")
    enc = LinearizedEncoder(net, tok, list(test.texts), **opts)
    loss = problem.loss.name
    test_problem = enc.problem(test.label_tensor(), loss=loss, lam=problem.lam, form="operator")
    test_problem = Problem(
        test_problem.J,
        test_problem.f0,
        test_problem.y,
        loss=loss,
        blocks=problem.blocks,
        lam=problem.lam,
        name=f"{problem.name}[held-out]",
        meta={"source": "reviews", "n_test": n_test},
    )
    source = f"reviews: {n_test} sentences outside the training split (seed {meta['split_seed']})"
    return Problem(
        problem.J,
        problem.f0,
        problem.y,
        loss=problem.loss,
        blocks=problem.blocks,
        lam=problem.lam,
        seed=problem.seed,
        name=problem.name,
        meta=dict(meta, held_out=test_problem, held_out_source=source),
    )
