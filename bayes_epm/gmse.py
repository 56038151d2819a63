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

from bayes_epm.models.quantize import PUBLISHED_QUANTIZERS, QUANTIZERS, STORED_GMSE, gaussian_mse
from bayes_epm.models.sparsity import DEFAULT_SPARSIFIER, STORED_SPARSITY_GMSE, sparsity_handler

N_DRAWS = 1 << 20


@functools.cache
def quantizer_gmse(quantizer: str, bits: int, seed: int = 0) -> tuple[float, float]:
    """``(GMSE, standard error)`` of ``quantizer`` at ``bits``; published-only quantizers use the
    trainable quantizer whose forward pass they share; a method from a prior file uses the GMSE
    measured when its prior was imported (:mod:`bayes_epm.priors`)."""
    if bits in STORED_GMSE.get(quantizer, {}):
        return STORED_GMSE[quantizer][bits]
    if quantizer in PUBLISHED_QUANTIZERS:
        quantizer = PUBLISHED_QUANTIZERS[quantizer][1]
    if quantizer not in QUANTIZERS:
        raise KeyError(f"no GMSE for quantizer {quantizer!r} at {bits} bits: it is not a registered quantizer "
                       "here and its prior stored none at this bit width")
    return gaussian_mse(quantizer, bits, n=N_DRAWS, seed=seed)


@functools.cache
def sparsity_gmse(sparsity: float, pattern: str, sparsifier: str = DEFAULT_SPARSIFIER,
                  seed: int = 0) -> tuple[float, float]:
    """``(GMSE, standard error)`` of pruning to ``sparsity`` with ``pattern``, as the registered
    pattern (magnitude) or a prior file's sparsifier prunes (rows of 1024); a sparsifier whose
    callable is not importable here uses the GMSE measured when its prior was imported."""
    stored = STORED_SPARSITY_GMSE.get(sparsifier, {})
    if round(sparsity, 6) in stored:
        return stored[round(sparsity, 6)]
    try:
        handler = sparsity_handler(pattern, sparsifier)
    except Exception as err:
        raise KeyError(f"no GMSE for sparsifier {sparsifier!r} at sparsity {sparsity:g}: {err}") from None
    x = torch.randn(N_DRAWS // 1024, 1024, generator=torch.Generator().manual_seed(seed))
    mask = handler.mask(x, handler.count(x.numel(), sparsity, pattern), pattern)
    err2 = (x * (1 - mask)).pow(2).flatten().double()
    return float(err2.mean()), float(err2.std() / math.sqrt(err2.numel()))


def log_capacity(log_gmse, F, C, xp=np):
    """``log rho`` on the capacity curve with ``Lcap = 1`` (no error -> rho = 1):
    ``C * log(tanh(F * log_{1/4}(GMSE)))``. ``xp`` is the array namespace (numpy, or
    ``pytensor.tensor`` inside a PyMC graph); arguments broadcast."""
    return C * xp.log(xp.tanh(F * log_gmse / math.log(0.25)))
