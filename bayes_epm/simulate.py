"""Runs simulated from a known truth through the law (used by tests, examples and benchmarks).

The simulated lab of the sweep issue answers single runs the same way; this module makes whole
run tables: a grid of sizes x tokens-per-parameter x formats, with seeded log-normal noise.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from bayes_epm.law import loss


@dataclass(frozen=True)
class Truth:
    """A law and the true EPM of each format (dense is 1)."""

    E: float = 1.8
    A: float = 480.0
    B: float = 2000.0
    alpha: float = 0.34
    beta: float = 0.36
    noise_sd: float = 0.01  # on log L
    epm: dict[str, float] = field(default_factory=lambda: {"dense": 1.0})


def simulate_runs(truth: Truth, params: list[float], tokens_per_param: list[float], formats: list[str],
                  rng: np.random.Generator) -> pd.DataFrame:
    """One run per (size, tokens per parameter, format); a canonical run table."""
    rows = []
    for fmt in formats:
        rho = truth.epm[fmt]
        for n in params:
            for tpp in tokens_per_param:
                mean = loss(n, tpp * n, rho, truth.A, truth.B, truth.E, truth.alpha, truth.beta)
                rows.append({"params": n, "tokens": tpp * n, "format": fmt, "source": "simulated",
                             "loss": float(mean * np.exp(rng.normal(0.0, truth.noise_sd)))})
    return pd.DataFrame(rows, columns=["params", "tokens", "loss", "format", "source"])


def truth_file(truth: Truth, cost: dict[str, float] | None = None) -> str:
    """The text of the simulated lab's truth file for ``truth`` (``[law]``, ``[epm]`` and the per-format
    ``[cost]`` factors; read by :func:`bayes_epm.config.load_truth`)."""
    lines = ["[law]", *(f"{k} = {getattr(truth, k)!r}" for k in ("E", "A", "B", "alpha", "beta", "noise_sd")),
             "[epm]", *(f'"{f}" = {v!r}' for f, v in truth.epm.items() if f != "dense")]
    if cost:
        lines += ["[cost]", *(f'"{f}" = {v!r}' for f, v in cost.items())]
    return "\n".join(lines) + "\n"
