r"""PEFT adapter files: write a LoRA point (or an init with its offset) in ``save_pretrained`` layout.

A LoRA point :math:`(U_j, V_j)` of a real-model problem is the weight change
:math:`\Delta W_j = U_j V_j^\top`; as a PEFT adapter of scale :math:`s` it is
:math:`B_j = U_j / \sqrt s`, :math:`A_j = V_j^\top / \sqrt s`, with ``lora_alpha = s r``
(rsLoRA: :math:`s\sqrt r`).  An init with a weight offset :math:`O = s B_0 A_0`
(:class:`landscapes.inits.LoRAInit`) changes the weight by :math:`s B A - O = s [B, -B_0][A; A_0]`:
it is written as a plain rank-``2r`` adapter of the *unmodified* base model (what PEFT's
``path_initial_model_for_weight_conversion`` does for LoRA-GA and PiSSA).

The files are ``adapter_config.json`` (PEFT's own ``LoraConfig``, so any installed PEFT reads it)
and ``adapter_model.safetensors`` with keys ``base_model.model.<module>.lora_A.weight`` /
``lora_B.weight``.  Needs the optional ``peft`` extra; the base model is not loaded.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from landscapes.lora import LoRAPoint
from landscapes.problem import Problem
from theory.errors import InputTypeError, UserInputError

__all__ = ["export_peft_adapter", "adapter_factors"]


def adapter_factors(
    point: LoRAPoint, *, scale: float = 1.0, init: Any = None
) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...], float]:
    r"""``(B, A, s)`` with :math:`s B_j A_j` the weight change of ``point``.

    Without ``init``: :math:`B = U/\sqrt s`, :math:`A = V^\top/\sqrt s` at the given ``scale``.
    With ``init`` (a :class:`landscapes.inits.LoRAInit` whose shifted problem ``point`` was
    trained on): its scale, and when it has an offset the rank-``2r`` pair ``[B, -B_0]``,
    ``[A; A_0]`` whose product is :math:`UV^\top/s - B_0 A_0`, i.e. the change :math:`sBA - O`.
    """
    from landscapes.inits import LoRAInit

    if not isinstance(point, LoRAPoint):
        raise InputTypeError(f"point: expected a LoRAPoint, got {type(point).__name__}")
    if init is not None:
        if not isinstance(init, LoRAInit):
            raise InputTypeError(f"init: expected a LoRAInit or None, got {type(init).__name__}")
        scale = init.scale
    if not (isinstance(scale, (int, float)) and scale > 0 and math.isfinite(scale)):
        raise UserInputError(f"scale: expected a positive finite number, got {scale!r}")
    root = math.sqrt(scale)
    B = [u / root for u in point.U]
    A = [v.T / root for v in point.V]
    if init is not None and any(bool(o.any()) for o in init.offset):
        B = [torch.cat([b, -b0.to(b.dtype)], dim=1) for b, b0 in zip(B, init.B)]
        A = [torch.cat([a, a0.to(a.dtype)], dim=0) for a, a0 in zip(A, init.A)]
    return tuple(B), tuple(A), float(scale)


def export_peft_adapter(
    out_dir: str | os.PathLike[str],
    problem: Problem,
    point: LoRAPoint,
    *,
    init: Any = None,
    scale: float = 1.0,
    rslora: bool = False,
    base_model: str | None = None,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write ``point`` as a PEFT LoRA adapter of the model ``problem`` was linearized from.

    ``problem.meta['targets']`` (weight names such as ``encoder.layer.5.attention.self.query.weight``)
    name the modules; ``base_model`` defaults to ``problem.meta['model_path']``.  ``point`` is a
    LoRA point of ``problem`` (``scale``: the adapter scale to store, any positive value gives the
    same weight change), or of the shifted problem of ``init`` (then the init's scale and offset
    are used, see :func:`adapter_factors`).  ``dtype`` of the stored factors defaults to the
    problem's.  Returns the directory.
    """
    try:
        from peft import LoraConfig
    except ImportError as exc:  # pragma: no cover - the extra is installed in the tests
        raise ImportError(
            "export_peft_adapter needs the optional extra: pip install 'loracheck[peft]'"
        ) from exc
    from safetensors.torch import save_file

    targets = problem.meta.get("targets")
    if not isinstance(targets, Sequence) or len(targets) != len(problem.blocks):
        raise UserInputError(
            f"problem: expected meta['targets'] with one weight name per block ({len(problem.blocks)}), "
            f"got {targets!r}"
        )
    modules = []
    for t in targets:
        if not isinstance(t, str) or not t.endswith(".weight"):
            raise UserInputError(f"problem: expected target weight names ending in '.weight', got {t!r}")
        modules.append(t[: -len(".weight")])
    B, A, s = adapter_factors(point, scale=scale, init=init)
    for j, ((m, n), b, a) in enumerate(zip(problem.blocks, B, A)):
        if b.shape[0] != m or a.shape[1] != n or b.shape[1] != a.shape[0]:
            raise UserInputError(
                f"point: block {j} expected factors ({m}, r) and (r, {n}), "
                f"got {tuple(b.shape)} and {tuple(a.shape)}"
            )
    ranks = {int(b.shape[1]) for b in B}
    if len(ranks) != 1:
        raise UserInputError(f"point: expected one rank for every block, got {sorted(ranks)}")
    r = ranks.pop()
    alpha = s * (math.sqrt(r) if rslora else r)
    # PEFT computes lora_alpha / r (or / sqrt(r)) in floating point: a float alpha is exact here.
    alpha_arg: Any = int(alpha) if float(alpha).is_integer() else alpha
    base = base_model if base_model is not None else problem.meta.get("model_path")
    if not isinstance(base, str) or not base:
        raise UserInputError("base_model: expected a model path (problem.meta has no 'model_path')")
    cfg = LoraConfig(
        r=r,
        lora_alpha=alpha_arg,
        target_modules=list(modules),
        use_rslora=rslora,
        lora_dropout=0.0,
        bias="none",
        base_model_name_or_path=base,
        init_lora_weights=True,
    )
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserInputError(f"out_dir: expected a directory, got an existing file {str(out)!r}")
    out.mkdir(parents=True, exist_ok=True)
    dt = dtype or problem.dtype
    tensors = {}
    for mod, b, a in zip(modules, B, A):
        tensors[f"base_model.model.{mod}.lora_A.weight"] = a.detach().to(dtype=dt, device="cpu").contiguous()
        tensors[f"base_model.model.{mod}.lora_B.weight"] = b.detach().to(dtype=dt, device="cpu").contiguous()
    # The config is removed first and written last (each file atomically): a directory that has a
    # config holds a complete adapter, never new weights under an old config.
    (out / "adapter_config.json").unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".adapter_model.", suffix=".tmp", dir=out)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={"format": "pt"})
        os.replace(tmp, out / "adapter_model.safetensors")
        staging = Path(tempfile.mkdtemp(prefix=".adapter_config.", dir=out))
        try:
            cfg.save_pretrained(str(staging))
            os.replace(staging / "adapter_config.json", out / "adapter_config.json")
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return out
