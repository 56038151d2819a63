"""Fake quantization with a straight-through estimator (STE), one registered class per quantizer.

Weights are quantized per output channel (rows of a ``(out, in)`` weight); activations per token
(rows of a ``(tokens, in)`` input). Every quantizer is symmetric around zero and produces at most
``2**bits`` distinct values per row.

Both the grid step of each row and the rounding with its straight-through gradient (pass the
gradient where the input lies inside the clipping range, zero outside) are written here, each for
a measured reason:

- ``rms`` (the default): the step comes from the row's RMS, so that the clipping point is the
  MSE-optimal multiple of the standard deviation for a Gaussian at that bit width (Max 1960's
  optimal uniform quantizer; computed here once with scipy, see :func:`gaussian_optimal_clip`).
  The grid is *mid-rise* (levels at ``(k + 1/2) * step``): it uses all ``2**bits`` codes
  symmetrically, and at 1 bit it is exactly ``sign(x) * 0.798 * rms(x)``.
- ``absmax``: symmetric min-max. Mid-tread grid ``k * step`` with ``|k| <= 2**(bits-1) - 1`` and
  ``step = max|x| / (2**(bits-1) - 1)``; at 1 bit (where that grid has no non-zero level) it is
  ``sign(x) * max|x|``.

Why not a library: torchao 0.18's ``IntxFakeQuantizer`` has no symmetric per-token mode
("Symmetric per token is not supported yet") and no Gaussian-optimal clipping, so it cannot
express either quantizer above. torch's fused ``fake_quantize_per_channel_affine`` can express
them (mid-rise as a shifted mid-tread grid), but on CPU it measured 8x slower than the five
element-wise ops below (990 us against 120 us on a 2048 x 64 activation, torch 2.13), which alone
put weights+activations formats over their step-time budget. ``benchmarks/compression_overhead.py``
measures the whole cost.

A new quantizer is one subclass of :class:`Quantizer` registered with :func:`register_quantizer`;
it becomes usable in format names as ``w4:<name>``.
"""

from __future__ import annotations

import abc
import functools
import math
from typing import Callable, ClassVar

import numpy as np
import torch

QUANTIZERS: dict[str, "Quantizer"] = {}
# Quantizers known from published runs: usable in format names (to fit and query those runs) but
# not trainable here. Each maps to a description and to the trainable quantizer whose forward
# pass (and so whose error on Gaussian data) it matches.
PUBLISHED_QUANTIZERS: dict[str, tuple[str, str]] = {}
# Quantizers a prior file introduced (bayes_epm.priors): name -> the callable's origin
# ("pkg.mod:fn" or "/path/file.py:fn"). One whose callable did not import in this process is known
# by name (to fit and query its runs) but is not in QUANTIZERS, so it cannot be trained here.
METHOD_QUANTIZERS: dict[str, str] = {}
# GMSE measured when a method's prior was imported: name -> {bits: (GMSE, standard error)}
STORED_GMSE: dict[str, dict[int, tuple[float, float]]] = {}

_EPS = 1e-12  # floor on a row's step, so that an all-zero row divides by no zero


def register_quantizer(name: str) -> Callable[[type["Quantizer"]], type["Quantizer"]]:
    """Class decorator: make a quantizer available under ``name`` in format names."""

    def wrap(cls: type[Quantizer]) -> type[Quantizer]:
        if name in QUANTIZERS:
            raise KeyError(f"quantizer {name!r} is already registered")
        cls.name = name
        QUANTIZERS[name] = cls()
        return cls

    return wrap


_norm_cdf = np.vectorize(lambda x: 0.5 * math.erfc(-x / math.sqrt(2)))  # scipy.stats costs 1 s to import


def _norm_pdf(x: np.ndarray) -> np.ndarray:
    return np.exp(-0.5 * np.square(x)) / math.sqrt(2 * math.pi)


def register_published_quantizer(name: str, description: str, forward_like: str) -> None:
    """Make ``name`` valid in format names for runs trained elsewhere (not trainable here)."""
    if name in QUANTIZERS or name in PUBLISHED_QUANTIZERS:
        raise KeyError(f"quantizer {name!r} is already registered")
    if forward_like not in QUANTIZERS:
        raise KeyError(f"forward_like={forward_like!r} is not a trainable quantizer ({', '.join(sorted(QUANTIZERS))})")
    PUBLISHED_QUANTIZERS[name] = (description, forward_like)


def known_quantizers() -> list[str]:
    """Every quantizer name valid in a format: trainable, published-only and from prior files."""
    return sorted({*QUANTIZERS, *PUBLISHED_QUANTIZERS, *METHOD_QUANTIZERS})


def callable_origin(name: str) -> str:
    """Where a method quantizer's callable comes from; "" for the built-in ones."""
    return METHOD_QUANTIZERS.get(name, "")


def register_method_quantizer(name: str, origin: str, fn: Callable | None,
                              gmse: dict[int, tuple[float, float]]) -> None:
    """Register a quantizer introduced by a prior file (:mod:`bayes_epm.priors`).

    ``fn(tensor, bits) -> tensor`` fake-quantizes a 2-D tensor row by row (weights ``(out, in)``,
    activations ``(tokens, in)``); it is wrapped with a straight-through gradient. ``fn=None``
    (its callable does not import here, or there is none) makes the name valid in formats, with
    its stored ``gmse``, without making it trainable. Registering the same name from the same
    origin again keeps the function and updates the GMSE; from another origin it replaces both.
    """
    if name in PUBLISHED_QUANTIZERS or (name in QUANTIZERS and name not in METHOD_QUANTIZERS):
        raise KeyError(f"quantizer {name!r} is built in; a new method needs a new name")
    if name in METHOD_QUANTIZERS and METHOD_QUANTIZERS[name] != origin:
        unregister_method_quantizer(name)  # the prior set registered last wins (a replaced method)
    METHOD_QUANTIZERS[name] = origin
    if fn is not None:  # the function just imported (a file edited since is read again)
        quantizer = CallableQuantizer(fn)
        quantizer.name = name
        QUANTIZERS[name] = quantizer
    if gmse:
        set_stored_gmse(name, gmse)


def unregister_method_quantizer(name: str) -> None:
    """Forget a quantizer a prior file introduced (a failed import, or a test cleaning up)."""
    if name in METHOD_QUANTIZERS:
        del METHOD_QUANTIZERS[name]
        QUANTIZERS.pop(name, None)
        STORED_GMSE.pop(name, None)


def set_stored_gmse(name: str, gmse: dict[int, tuple[float, float]]) -> None:
    STORED_GMSE[name] = dict(gmse)


def _gaussian_midrise_mse(step: float, bits: int) -> float:
    """MSE of a ``2**bits``-level mid-rise uniform quantizer with ``step`` on N(0, 1), in closed form."""
    n = 2**bits
    levels = (np.arange(n) - n / 2 + 0.5) * step
    edges = np.concatenate([[-np.inf], (levels[:-1] + levels[1:]) / 2, [np.inf]])
    a, b = edges[:-1], edges[1:]
    m0 = _norm_cdf(b) - _norm_cdf(a)  # P(a < x < b)
    m1 = _norm_pdf(a) - _norm_pdf(b)  # E[x; a < x < b]
    xa = np.where(np.isfinite(a), a, 0.0) * _norm_pdf(a)  # x * pdf(x) -> 0 at +-inf
    xb = np.where(np.isfinite(b), b, 0.0) * _norm_pdf(b)
    m2 = m0 + xa - xb  # E[x^2; a < x < b]
    return float(np.sum(m2 - 2 * levels * m1 + levels**2 * m0))


@functools.cache
def gaussian_optimal_clip(bits: int) -> float:
    """Clipping point, in standard deviations, of the MSE-optimal ``2**bits``-level uniform quantizer.

    For a mid-rise grid the clipping point is ``2**(bits-1) * step``. Values: 1.596 (1 bit),
    1.991, 2.344, 2.682 (4 bits), 3.010, 3.330, 3.640, 3.938 (8 bits), as in Max (1960).
    """
    from scipy import optimize  # imported here: it costs about a second, paid by quantized runs only

    res = optimize.minimize_scalar(
        _gaussian_midrise_mse, bounds=(1e-4, 4.0), args=(bits,), method="bounded",
        options={"xatol": 1e-10},
    )
    if not res.success:  # pragma: no cover - a bounded scalar problem on a smooth function
        raise RuntimeError(f"could not find the Gaussian-optimal step at {bits} bits: {res.message}")
    return float(res.x) * 2 ** (bits - 1)


def gaussian_mse(quantizer: "str | Quantizer", bits: int, n: int = 1 << 20, seed: int = 0) -> tuple[float, float]:
    """Mean squared error of a quantizer (a registered name, or a :class:`Quantizer`) on standard
    Gaussian data (GMSE).

    Returns ``(mse, standard error)`` from ``n`` seeded draws, quantized as 1024-wide rows.
    """
    q = QUANTIZERS[quantizer] if isinstance(quantizer, str) else quantizer
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n // 1024, 1024, generator=gen)
    with torch.no_grad():
        err2 = (q.quantize_rows(x, bits) - x).pow(2).flatten().double()
    return float(err2.mean()), float(err2.std() / math.sqrt(err2.numel()))


class _RoundToGrid(torch.autograd.Function):
    """Round each row of ``x`` to its grid and clamp; straight-through gradient inside the range.

    Forward: ``q = clamp(round(x / step), -kmax, kmax) * step`` (mid-tread) or
    ``q = (clamp(floor(x / step), -kmax - 1, kmax) + 1/2) * step`` (mid-rise).
    Backward: ``dq/dx = 1`` where ``x`` lies inside the clipping range, 0 outside (clipped STE).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, step: torch.Tensor, kmax: int, midrise: bool) -> torch.Tensor:
        u = x.float() / step  # (R, C) in units of the step; fp32 also under bf16 autocast
        bound = kmax + 1 if midrise else kmax + 0.5
        inside = u.abs() <= bound
        if midrise:
            q = u.floor_().clamp_(-kmax - 1, kmax).add_(0.5)
        else:
            q = u.round_().clamp_(-kmax, kmax)
        ctx.save_for_backward(inside)
        return q.mul_(step).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (inside,) = ctx.saved_tensors
        return grad * inside, None, None, None


def _fake_quantize_rows(x: torch.Tensor, step: torch.Tensor, kmax: int, midrise: bool) -> torch.Tensor:
    """Fake-quantize each row of ``x`` (R, C) to the grid of ``step[r]`` (R,), see :class:`_RoundToGrid`.

    Mid-tread levels are ``k * step`` with ``|k| <= kmax``; mid-rise levels are ``(k + 1/2) * step``
    with ``-kmax - 1 <= k <= kmax``. ``step`` is a constant: the gradient reaches ``x`` only.
    """
    step = step.detach().float().unsqueeze(1)  # (R, 1)
    q = _RoundToGrid.apply(x, step.clamp_min(_EPS), kmax, midrise)
    return q * (step > 0) if midrise else q  # an all-zero row stays zero (mid-rise has no zero level)


class Quantizer(abc.ABC):
    """A symmetric per-row fake quantizer. Subclasses choose the grid step of each row."""

    name: ClassVar[str]

    @abc.abstractmethod
    def quantize_rows(self, x: torch.Tensor, bits: int, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Fake-quantize every row of ``x`` (R, C) to ``bits``.

        ``mask`` (R, C) of 0/1, if given, marks the entries that exist (sparse weights): the
        scale is computed from them alone and masked entries stay exactly zero.
        """

    def weight(self, w: torch.Tensor, bits: int, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Per-output-channel fake quantization of a weight ``w`` (out, in)."""
        return self.quantize_rows(w, bits, mask)

    def activation(self, x: torch.Tensor, bits: int) -> torch.Tensor:
        """Per-token fake quantization of an activation ``x`` (..., in)."""
        shape = x.shape
        return self.quantize_rows(x.reshape(-1, shape[-1]), bits).reshape(shape)


@register_quantizer("rms")
class RmsQuantizer(Quantizer):
    """Step from the row's RMS, clipped at the Gaussian MSE-optimal multiple for ``bits``."""

    def quantize_rows(self, x, bits, mask=None):
        with torch.no_grad():
            # RMS per row, of the surviving entries only when masked (masked entries are already 0)
            count = x.shape[1] if mask is None else mask.sum(dim=1).clamp_min(1)
            rms = torch.linalg.vector_norm(x.detach().float(), dim=1) / torch.as_tensor(count).sqrt()
            step = gaussian_optimal_clip(bits) * rms / 2 ** (bits - 1)
        q = _fake_quantize_rows(x, step, 2 ** (bits - 1) - 1, midrise=True)
        return q if mask is None else q * mask  # mid-rise has no zero level: re-apply the mask


@register_quantizer("absmax")
class AbsmaxQuantizer(Quantizer):
    """Symmetric min-max: the largest magnitude in the row is the outermost level."""

    def quantize_rows(self, x, bits, mask=None):
        with torch.no_grad():
            amax = x.detach().float().abs().amax(dim=1)
        if bits == 1:  # sign(x) * max|x|: a mid-rise grid with levels +-step/2
            q = _fake_quantize_rows(x, 2 * amax, 0, midrise=True)
            return q if mask is None else q * mask
        qmax = 2 ** (bits - 1) - 1
        return _fake_quantize_rows(x, amax / qmax, qmax, midrise=False)


# QuEST (Panferov et al. 2025, arXiv 2502.05003; github.com/IST-DASLab/QuEST): every one of these
# scales by the RMS and clips at the Gaussian-MSE-optimal point, as `rms` does; they differ in the
# Hadamard rotation applied first (which leaves Gaussian data Gaussian) and in the backward pass.
for _name, _text in {
    "trust": "QuEST TrustQuantizer: RMS clipping, trust-masked straight-through gradient",
    "clip": "QuEST ClipQuantizer: RMS clipping, clipped straight-through gradient",
    "hadamard_trust": "QuEST HadamardTrustQuantizer: Hadamard rotation, then trust (the QuEST method)",
    "half_hadamard_trust": "QuEST HalfHadamardTrustQuantizer: Hadamard on half the dimensions, then trust",
    "hadamard_clip": "QuEST HadamardClipQuantizer: Hadamard rotation, then clip",
    "half_hadamard_clip": "QuEST HalfHadamardClipQuantizer: Hadamard on half the dimensions, then clip",
}.items():
    register_published_quantizer(_name, _text, forward_like="rms")


class CallableQuantizer(Quantizer):
    """A quantizer from a function ``fn(rows, bits) -> rows`` (a prior file's ``gmse.quantizer``).

    The forward pass is ``fn``'s; the gradient is the identity (plain straight-through): nothing
    is known about ``fn``'s clipping range. Masked entries (sparse weights) stay zero.
    """

    def __init__(self, fn: Callable[[torch.Tensor, int], torch.Tensor]) -> None:
        self.fn = fn

    def quantize_rows(self, x, bits, mask=None):
        src = x if mask is None else x * mask
        with torch.no_grad():
            q = self.fn(src.detach(), bits).to(x.dtype)
        out = x + (q - x).detach()
        return out if mask is None else out * mask
