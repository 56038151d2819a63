"""Gaussian MSE (GMSE) of a compression level: its error on standard Gaussian data.

Panferov et al. 2025 (arXiv 2506.01863) find that a representation's capacity, and so its EPM,
is a smooth function of this one number:

    rho = Lcap * tanh(F * log_{1/4}(GMSE)) ** C

It is computable from a method's code alone, which is what lets the model place levels it has
never seen run. Monte Carlo over ``2**20`` seeded draws; the standard error is returned too.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from bayes_epm.models.quantize import METHOD_QUANTIZERS, PUBLISHED_QUANTIZERS, QUANTIZERS, STORED_GMSE, gaussian_mse
from bayes_epm.models.sparsity import DEFAULT_SPARSIFIER, PATTERNS, STORED_SPARSITY_GMSE, pattern_family

N_DRAWS = 1 << 20


def quantizer_gmse(quantizer: str, bits: int, seed: int = 0) -> tuple[float, float]:
    """``(GMSE, standard error)`` of ``quantizer`` at ``bits``; published-only quantizers use the
    trainable quantizer whose forward pass they share. A method from a prior file answers from the
    GMSE measured when its prior was imported, and only from it (a bit width it was not placed at
    raises ``KeyError``), so that every process places its levels alike."""
    if quantizer in METHOD_QUANTIZERS:
        if bits not in STORED_GMSE.get(quantizer, {}):
            raise KeyError(f"no GMSE for quantizer {quantizer!r} at {bits} bits: its prior file placed it at "
                           f"{sorted(STORED_GMSE.get(quantizer, {})) or 'no bit width'}")
        return STORED_GMSE[quantizer][bits]
    if quantizer in PUBLISHED_QUANTIZERS:
        quantizer = PUBLISHED_QUANTIZERS[quantizer][1]
    if quantizer not in QUANTIZERS:
        raise KeyError(f"no GMSE for quantizer {quantizer!r}: it is not a registered quantizer")
    return _builtin_quantizer_gmse(quantizer, bits, seed)


@functools.cache
def _builtin_quantizer_gmse(quantizer: str, bits: int, seed: int) -> tuple[float, float]:
    return gaussian_mse(QUANTIZERS[quantizer], bits, n=N_DRAWS, seed=seed)


def sparsity_gmse(sparsity: float, pattern: str, sparsifier: str = DEFAULT_SPARSIFIER,
                  seed: int = 0) -> tuple[float, float]:
    """``(GMSE, standard error)`` of pruning to ``sparsity`` with ``pattern`` (rows of 1024), as the
    pattern's magnitude pruning prunes; a prior file's sparsifier answers from the GMSE measured when
    its prior was imported, and only from it (as :func:`quantizer_gmse`)."""
    if sparsifier != DEFAULT_SPARSIFIER:
        stored = STORED_SPARSITY_GMSE.get(sparsifier, {})
        if round(sparsity, 6) not in stored:
            raise KeyError(f"no GMSE for sparsifier {sparsifier!r} at sparsity {sparsity:g}: its prior file placed "
                           f"it at {sorted(stored) or 'no sparsity'}")
        return stored[round(sparsity, 6)]
    return _magnitude_gmse(round(sparsity, 6), pattern, seed)


@functools.cache
def _magnitude_gmse(sparsity: float, pattern: str, seed: int) -> tuple[float, float]:
    return pruning_gmse(PATTERNS[pattern_family(pattern)], sparsity, pattern, seed)


def pruning_gmse(handler, sparsity: float, pattern: str = "unstructured", seed: int = 0) -> tuple[float, float]:
    """``(GMSE, standard error)`` of the masks ``handler`` (a :class:`SparsityPattern`) chooses."""
    x = torch.randn(N_DRAWS // 1024, 1024, generator=torch.Generator().manual_seed(seed))
    mask = handler.mask(x, handler.count(x.numel(), sparsity, pattern), pattern)
    err2 = (x * (1 - mask)).pow(2).flatten().double()
    return float(err2.mean()), float(err2.std() / math.sqrt(err2.numel()))


def log_capacity(log_gmse, F, C, xp=np):
    """``log rho`` on the capacity curve with ``Lcap = 1`` (no error -> rho = 1):
    ``C * log(tanh(F * log_{1/4}(GMSE)))``. ``xp`` is the array namespace (numpy, or
    ``pytensor.tensor`` inside a PyMC graph); arguments broadcast."""
    return C * xp.log(xp.tanh(F * log_gmse / math.log(0.25)))
