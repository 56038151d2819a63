"""Magnitude pruning on a gradual cubic schedule, one registered class per sparsity pattern.

The masks live where torch's pruning utilities put them: :func:`torch.nn.utils.prune.identity`
re-parametrises ``weight`` as ``weight_orig * weight_mask`` (a forward pre-hook), so pruned weights
are exactly zero in every forward pass and receive no gradient. The schedule overwrites
``weight_mask`` in place at every update.

- ``unstructured``: torch's :class:`~torch.nn.utils.prune.L1Unstructured` chooses the smallest
  magnitudes of the current effective weight. Pruned entries have magnitude 0, so they are chosen
  first and pruning is cumulative.
- ``n:m`` (e.g. 2:4): torch has no N:M pruning, so the mask is ours: in each group of ``m``
  consecutive inputs the ``m - n`` smallest magnitudes are candidates, and the update prunes the
  globally smallest candidates. When the schedule reaches ``1 - n/m`` every candidate is pruned,
  so every group holds exactly ``n`` non-zeros.

Schedule (Zhu & Gupta 2017): dense until ``start`` (25% of the steps), then
``s_t = s * (1 - (1 - (t - start) / (end - start))**3)`` until ``end`` (75%), masks recomputed every
``interval`` steps, and the exact target from ``end`` on.

A new pattern is one subclass of :class:`SparsityPattern` registered with :func:`register_pattern`.

A new *sparsifier* (how to choose the weights, as opposed to the pattern they form) comes from a
prior file (:mod:`bayes_epm.priors`): a function ``fn(weight, sparsity) -> pruned weight`` whose
zeros become the mask, on the same schedule, for unstructured sparsity; formats name it
``s0.5:<name>``. The default, ``magnitude``, is the pruning above.
"""

from __future__ import annotations

import abc
import math
import re
from typing import Callable, ClassVar, Sequence

import torch
from torch import nn
from torch.nn.utils import prune

from bayes_epm.errors import CompressionError

PATTERNS: dict[str, "SparsityPattern"] = {}
_NM_RE = re.compile(r"^\d+:\d+$")
DEFAULT_SPARSIFIER = "magnitude"
# Sparsifiers a prior file introduced: name -> the callable's origin. The trainable ones (whose
# callable imported in this process) are in SPARSIFIERS; the others are known by name only.
METHOD_SPARSIFIERS: dict[str, str] = {}
SPARSIFIERS: dict[str, "CallableSparsifier"] = {}
# GMSE measured when a sparsifier's prior was imported: name -> {sparsity: (GMSE, standard error)}
STORED_SPARSITY_GMSE: dict[str, dict[float, tuple[float, float]]] = {}


def known_sparsifiers() -> list[str]:
    return sorted({DEFAULT_SPARSIFIER, *METHOD_SPARSIFIERS})


def register_method_sparsifier(name: str, origin: str, fn: Callable | None,
                               gmse: dict[float, tuple[float, float]]) -> None:
    """Register a sparsifier introduced by a prior file (``fn=None``: known by name, not trainable).
    The same name from the same origin again keeps the function and updates the GMSE; from another
    origin it replaces both."""
    if name == DEFAULT_SPARSIFIER:
        raise KeyError(f"sparsifier {name!r} is built in; a new method needs a new name")
    if name in METHOD_SPARSIFIERS and METHOD_SPARSIFIERS[name] != origin:
        unregister_method_sparsifier(name)  # the prior set registered last wins (a replaced method)
    METHOD_SPARSIFIERS[name] = origin
    if fn is not None:  # the function just imported (a file edited since is read again)
        SPARSIFIERS[name] = CallableSparsifier(fn)
    if gmse:
        STORED_SPARSITY_GMSE[name] = {round(float(k), 6): v for k, v in gmse.items()}


def unregister_method_sparsifier(name: str) -> None:
    METHOD_SPARSIFIERS.pop(name, None)
    SPARSIFIERS.pop(name, None)
    STORED_SPARSITY_GMSE.pop(name, None)


def sparsity_handler(pattern: str, sparsifier: str = DEFAULT_SPARSIFIER) -> "SparsityPattern":
    """What chooses the pruned weights: the pattern's magnitude pruning, or a method's callable."""
    if sparsifier == DEFAULT_SPARSIFIER:
        return PATTERNS[pattern_family(pattern)]
    if sparsifier not in SPARSIFIERS:
        raise CompressionError(f"sparsifier {sparsifier!r} came from a prior file whose callable "
                               f"({METHOD_SPARSIFIERS.get(sparsifier) or 'none given'}) is not importable here, "
                               f"so it cannot be trained; trainable: {', '.join([DEFAULT_SPARSIFIER, *sorted(SPARSIFIERS)])}")
    return SPARSIFIERS[sparsifier]


def register_pattern(name: str) -> Callable[[type["SparsityPattern"]], type["SparsityPattern"]]:
    """Class decorator: make a sparsity pattern family available under ``name``."""

    def wrap(cls: type[SparsityPattern]) -> type[SparsityPattern]:
        if name in PATTERNS:
            raise KeyError(f"sparsity pattern {name!r} is already registered")
        cls.name = name
        PATTERNS[name] = cls()
        return cls

    return wrap


def pattern_family(pattern: str) -> str:
    """Registry key of a pattern string: ``"unstructured"`` or ``"n:m"`` for ``"2:4"`` and the like."""
    if pattern in PATTERNS and pattern != "n:m":
        return pattern
    if isinstance(pattern, str) and _NM_RE.match(pattern):
        return "n:m"
    raise ValueError(f"unknown sparsity pattern {pattern!r}; valid: 'unstructured' or '<n>:<m>' such as '2:4'")


class SparsityPattern(abc.ABC):
    """How to choose which weights to prune."""

    name: ClassVar[str]

    def check(self, weight_shape: torch.Size, pattern: str) -> str | None:
        """Why ``pattern`` cannot be applied to a weight of this shape, or None if it can."""
        return None

    def count(self, numel: int, sparsity: float, pattern: str) -> int:
        """How many of ``numel`` weights to prune at ``sparsity``."""
        return round(sparsity * numel)

    @abc.abstractmethod
    def mask(self, weight: torch.Tensor, n_prune: int, pattern: str) -> torch.Tensor:
        """A 0/1 mask like ``weight`` (out, in) with exactly ``n_prune`` zeros."""


@register_pattern("unstructured")
class Unstructured(SparsityPattern):
    def mask(self, weight, n_prune, pattern):
        return prune.L1Unstructured(amount=n_prune).compute_mask(weight, torch.ones_like(weight))


@register_pattern("n:m")
class NM(SparsityPattern):
    @staticmethod
    def _nm(pattern: str) -> tuple[int, int]:
        n, m = (int(v) for v in pattern.split(":"))
        return n, m

    def check(self, weight_shape, pattern):
        _, m = self._nm(pattern)
        if weight_shape[1] % m:
            return f"{pattern} needs the input size to be a multiple of {m}, got a weight of shape {tuple(weight_shape)}"
        return None

    def count(self, numel, sparsity, pattern):
        n, m = self._nm(pattern)
        exact = numel // m * (m - n)  # every candidate: exactly n non-zeros in every group
        # the stored target is 1 - n/m rounded to 6 decimals: at the target, prune exactly the candidates
        return exact if abs(sparsity - (1 - n / m)) < 1e-6 else min(exact, round(sparsity * numel))

    def mask(self, weight, n_prune, pattern):
        n, m = self._nm(pattern)
        out_f, in_f = weight.shape
        n_prune = min(n_prune, weight.numel() // m * (m - n))  # never more than the candidates
        mag = weight.detach().abs().reshape(out_f, in_f // m, m)  # (out, groups, m)
        order = mag.argsort(dim=-1)  # ascending within each group
        candidate = torch.zeros_like(mag, dtype=torch.bool).scatter_(-1, order[..., : m - n], True)
        score = torch.where(candidate, mag, torch.full_like(mag, math.inf)).reshape(-1)
        mask = torch.ones(weight.numel(), dtype=weight.dtype, device=weight.device)
        if n_prune:
            mask[torch.topk(score, n_prune, largest=False).indices] = 0
        return mask.reshape(out_f, in_f)


class CallableSparsifier(SparsityPattern):
    """Unstructured pruning chosen by a function ``fn(weight, sparsity) -> pruned weight``: its zeros
    are the mask. Already-pruned weights are zero in what it is given (pruning stays cumulative)."""

    name = "callable"

    def __init__(self, fn: Callable[[torch.Tensor, float], torch.Tensor]) -> None:
        self.fn = fn

    def mask(self, weight, n_prune, pattern):
        out = self.fn(weight.detach().clone(), n_prune / weight.numel())
        return (out != 0).to(weight.dtype)


def cubic_sparsity(step: int, total_steps: int, target: float,
                   start_frac: float = 0.25, end_frac: float = 0.75) -> float:
    """Target sparsity at ``step`` (0-based) of ``total_steps`` on the cubic schedule."""
    start, end = start_frac * total_steps, end_frac * total_steps
    if step < start:
        return 0.0
    if step >= end or end <= start:
        return target
    return target * (1.0 - (1.0 - (step - start) / (end - start)) ** 3)


class SparsitySchedule:
    """Drives the masks of a set of pruned linear layers through training.

    Parameters
    ----------
    modules : sequence of nn.Linear
        Layers already re-parametrised by :func:`attach_masks`.
    target : float
        Final sparsity of every layer.
    pattern : str
        ``"unstructured"`` or ``"<n>:<m>"``.
    total_steps : int
        Number of optimiser steps of the run.
    interval : int, optional
        Steps between mask updates; default ``ceil(total_steps / 100)``.
    sparsifier : str
        ``"magnitude"`` (the pattern's own pruning) or a prior file's sparsifier.
    """

    def __init__(self, modules: Sequence[nn.Linear], target: float, pattern: str, total_steps: int,
                 interval: int | None = None, sparsifier: str = DEFAULT_SPARSIFIER) -> None:
        self.modules = list(modules)
        self.target = target
        self.pattern = pattern
        self.handler = sparsity_handler(pattern, sparsifier)
        self.total_steps = total_steps
        self.interval = interval or max(1, math.ceil(total_steps / 100))
        self.current = 0.0

    @torch.no_grad()
    def set_sparsity(self, sparsity: float) -> None:
        """Prune every layer to ``round(sparsity * numel)`` zeros (cumulative with earlier updates)."""
        for mod in self.modules:
            eff = mod.weight_orig * mod.weight_mask  # (out, in), pruned entries are 0
            n_prune = self.handler.count(eff.numel(), sparsity, self.pattern)
            mod.weight_mask.copy_(self.handler.mask(eff, n_prune, self.pattern))
        self.current = sparsity

    def step(self, step: int) -> None:
        """Call before optimiser step ``step``; updates the masks on the schedule's grid."""
        s = cubic_sparsity(step, self.total_steps, self.target)
        if s != self.current and (s == self.target or step % self.interval == 0):
            self.set_sparsity(s)

    def finalize(self) -> None:
        """Make sure the final target holds exactly (also for runs too short to reach it)."""
        if self.current != self.target:
            self.set_sparsity(self.target)

    @torch.no_grad()
    def achieved(self) -> float:
        """Fraction of exactly-zero entries over all managed weights, as the forward pass sees them."""
        zeros = sum(int((m.weight_orig * m.weight_mask == 0).sum()) for m in self.modules)
        total = sum(m.weight_orig.numel() for m in self.modules)
        return zeros / total if total else 0.0


def attach_masks(module: nn.Linear, pattern: str) -> None:
    """Re-parametrise ``module.weight`` as ``weight_orig * weight_mask`` with an all-ones mask."""
    reason = PATTERNS[pattern_family(pattern)].check(module.weight.shape, pattern)
    if reason is not None:
        raise CompressionError(reason)
    prune.identity(module, "weight")
