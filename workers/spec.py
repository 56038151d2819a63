"""What a training run is asked to do (:class:`TrainSpec`) and what it reports (:class:`RunResult`).

Both are frozen dataclasses with ``to_dict``/``from_dict``: they cross Ray, the study store and
HTTP unchanged. A spec is validated when it is made, so a bad value fails at the edge, before any
work starts.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from bayes_epm.errors import FormatError, SpecError
from bayes_epm.models.formats import Format

MIN_PARAMS = 1_000  # the smallest shape the size rule builds has about 900 parameters
MAX_PARAMS = 1e10  # beyond this no single-device run of this worker fits in memory
MAX_CONTEXT = 65_536
STATUSES = ("ok", "diverged", "failed")
_DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def peak_lr(d_model: int) -> float:
    """Peak AdamW learning rate for a model of width ``d_model``.

    ``3e-3 * sqrt(256 / d_model)``, capped at 1e-2: the rate falls as the width grows (as in muP
    and the nanoGPT/Chinchilla practice of smaller rates for wider models), and the constant was
    chosen on the built-in corpus at 2e4-3e5 parameters (see ``examples/lr_check.py``).
    """
    return min(1e-2, 3e-3 * math.sqrt(256 / d_model))


def _strict_from_dict(cls: type, d: dict[str, Any], what: str) -> Any:
    """``cls(**d)``, refusing keys the dataclass does not have (a typo must not pass unnoticed)."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise SpecError(f"unknown {what} keys {unknown}; valid keys: {sorted(known)}")
    return cls(**d)


def _register_callables(fmt: str, quantizer: str, sparsifier: str) -> None:
    """Register a prior file's quantizer (the name after the last ':' of the format) and sparsifier
    (``s<fraction>:<name>`` in the format's first part) from their import paths."""
    from bayes_epm.models.quantize import QUANTIZERS, callable_origin, register_method_quantizer
    from bayes_epm.models.sparsity import METHOD_SPARSIFIERS, SPARSIFIERS, register_method_sparsifier
    from bayes_epm.priors import load_callable

    # a reused worker may hold another study's method of the same name: the spec's origin decides
    name = fmt.rsplit(":", 1)[-1]
    if quantizer and (name not in QUANTIZERS or callable_origin(name) != quantizer):
        register_method_quantizer(name, quantizer, load_callable(quantizer), {})
    m = re.match(r"^s[0-9.]+:([A-Za-z_][A-Za-z0-9_]*)(?:-|$)", fmt)
    if sparsifier and m is not None and (m[1] not in SPARSIFIERS or METHOD_SPARSIFIERS.get(m[1]) != sparsifier):
        register_method_sparsifier(m[1], sparsifier, load_callable(sparsifier), {})


def _positive(name: str, value: Any, integer: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    if ok and integer:
        ok = float(value) == int(value)
    if not ok:
        kind = "a positive integer" if integer else "a positive finite number"
        raise SpecError(f"{name}={value!r} is not valid; {name} must be {kind}")


@dataclass(frozen=True)
class TrainSpec:
    """One training run.

    Parameters
    ----------
    params : float
        Requested non-embedding parameter count N (the exact N built is in the result).
    tokens : float
        Training tokens D; the run trains ``ceil(D / (batch_size * context))`` steps.
    format : str
        Compression format name (see :mod:`bayes_epm.models.formats`); stored canonical.
    seed : int
        Seeds the initialisation and the data order.
    batch_size, context : int
        Sequences per step and tokens per sequence.
    lr : float or None
        Peak learning rate; None takes :func:`peak_lr` of the model's width.
    warmup_frac, min_lr_frac : float
        Linear warm-up over this fraction of the steps, then cosine decay to ``min_lr_frac * lr``.
    weight_decay, grad_clip : float
        AdamW decoupled weight decay (on matrices and embeddings) and global gradient-norm clip.
    data, data_dtype : str
        ``"builtin"`` or a path; ``auto``, ``text``, ``uint16`` or ``uint32`` (see :mod:`.data`).
    device : str
        ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``.
    eval_tokens : int
        Size of the fixed held-out set the final loss is averaged over.
    """

    params: float
    tokens: float
    format: str = "dense"
    seed: int = 0
    batch_size: int = 16
    context: int = 128
    lr: float | None = None
    warmup_frac: float = 0.1
    min_lr_frac: float = 0.1
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    data: str = "builtin"
    data_dtype: str = "auto"
    device: str = "auto"
    eval_tokens: int = 65_536
    quantizer_callable: str = ""  # a prior file's quantizer ("pkg.mod:fn"), imported where the run trains
    sparsifier_callable: str = ""  # a prior file's sparsifier, likewise

    def __post_init__(self) -> None:
        _positive("params", self.params)
        if self.params < MIN_PARAMS:
            raise SpecError(f"params={self.params!r} is too small; the smallest model has about {MIN_PARAMS} "
                            "non-embedding parameters")
        if self.params > MAX_PARAMS:
            raise SpecError(f"params={self.params!r} is too large; this worker trains at most {MAX_PARAMS:.0e} "
                            "parameters on one device")
        _positive("tokens", self.tokens)
        for name in ("batch_size", "context", "eval_tokens"):
            _positive(name, getattr(self, name), integer=True)
            object.__setattr__(self, name, int(getattr(self, name)))
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise SpecError(f"seed={self.seed!r} is not valid; seed must be a non-negative integer")
        if self.context > MAX_CONTEXT:
            raise SpecError(f"context={self.context} is too long; at most {MAX_CONTEXT} tokens")
        if self.lr is not None:
            _positive("lr", self.lr)
        for name in ("warmup_frac", "min_lr_frac"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
                raise SpecError(f"{name}={v!r} is not valid; it must be a fraction in [0, 1]")
        for name in ("weight_decay", "grad_clip"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise SpecError(f"{name}={v!r} is not valid; it must be a finite number >= 0")
        if not isinstance(self.device, str) or not _DEVICE_RE.match(self.device):
            raise SpecError(f"device={self.device!r} is not valid; valid: auto, cpu, cuda, cuda:N")
        try:
            object.__setattr__(self, "format", Format.parse(self.format).name)
        except FormatError as exc:
            raise SpecError(str(exc)) from None
        if self.eval_tokens < self.context:
            raise SpecError(f"eval_tokens={self.eval_tokens} is smaller than context={self.context}; "
                            "the held-out set needs at least one full window")

    @property
    def fmt(self) -> Format:
        return Format.parse(self.format)

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.context

    @property
    def steps(self) -> int:
        return max(1, math.ceil(self.tokens / self.tokens_per_step))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainSpec":
        if d.get("quantizer_callable") or d.get("sparsifier_callable"):  # a Ray worker: make the
            _register_callables(str(d.get("format", "")), d.get("quantizer_callable", ""),  # methods trainable here
                                d.get("sparsifier_callable", ""))
        return _strict_from_dict(cls, d, "spec")


@dataclass(frozen=True)
class RunResult:
    """What one training run reports.

    ``loss`` is the mean next-token cross-entropy (nats per token) over the fixed held-out set,
    NaN unless ``status == "ok"``. ``flops`` is the conventional ``6 * params * tokens`` with the
    exact non-embedding N built and the tokens actually trained. ``diverged_step`` is the step at
    which the loss first became NaN/inf; ``error`` says why a run failed or diverged.
    """

    status: str
    loss: float
    params: int
    tokens: int
    format: str
    flops: float
    sparsity_achieved: float
    wall_s: float
    tokens_per_s: float
    device: str
    seed: int
    version: str
    error: str = ""
    diverged_step: int | None = None
    steps: int = 0
    n_layer: int = 0
    d_model: int = 0
    n_head: int = 0
    lr: float = 0.0
    batch_size: int = 0
    context: int = 0
    train_loss: float = math.nan
    eval_tokens: int = 0
    data_source: str = ""
    data_sha256: str = ""
    torch_version: str = ""
    node: str = ""  # the Ray node that trained it (empty outside Ray)
    spec: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise SpecError(f"status={self.status!r} is not valid; valid: {', '.join(STATUSES)}")

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunResult":
        return _strict_from_dict(cls, d, "result")
