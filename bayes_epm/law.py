"""The scaling law, written once, in log space. Everything (the PyMC graph, the simulated lab,
predictions and plots) calls :func:`log_loss`.

    L(N, D, c) = E + A (N rho_c)^-alpha + B D^-beta
    log L = logaddexp(logaddexp(a - alpha (log N + log rho_c), b - beta log D), e)

with ``a = log A``, ``b = log B``, ``e = log E``. ``logaddexp`` is the one of the array library
the arguments come from (numpy's by default; pass ``pytensor.tensor.logaddexp`` in a PyMC graph),
so the same function serves point values, posterior draws and the model graph.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np


def log_loss(log_n: Any, log_d: Any, log_rho: Any, a: Any, b: Any, e: Any, alpha: Any, beta: Any,
             logaddexp: Callable[[Any, Any], Any] = np.logaddexp) -> Any:
    """``log L`` of the law; arguments broadcast (runs along one axis, posterior draws along another)."""
    return logaddexp(logaddexp(a - alpha * (log_n + log_rho), b - beta * log_d), e)


def loss(params: Any, tokens: Any, epm: Any, A: float, B: float, E: float, alpha: float, beta: float) -> Any:
    """The law on the natural scale, for point values (numpy arrays broadcast)."""
    return np.exp(log_loss(np.log(params), np.log(tokens), np.log(epm), np.log(A), np.log(B), np.log(E),
                           alpha, beta))
