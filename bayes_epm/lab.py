"""The simulated lab: answers a training run from a known truth, in microseconds.

The loss is the law (:func:`bayes_epm.law.loss`, the same function the model uses) at the run's
N, D and the format's true EPM, times ``exp(noise)`` with ``noise ~ N(0, noise_sd)`` seeded by the
study seed and the run's id, so a study replays identically. A format not listed in the truth's
``[epm]`` table is built from listed ones that cover its factors (``s0.5-w4a4`` from ``s0.5`` and
``w4a4``); one that cannot be built is an error before anything runs.
"""

from __future__ import annotations

import math

import numpy as np

from bayes_epm.config import LabTruth
from bayes_epm.errors import InvalidInputError
from bayes_epm.law import loss
from bayes_epm.model import factor_levels
from bayes_epm.models.formats import Format


def true_epm(truth: LabTruth, fmt: str) -> float:
    """The truth's EPM of ``fmt``: listed, or the product of listed formats covering its factor levels."""
    name = Format.parse(fmt).name
    if name == "dense":
        return 1.0
    if name in truth.epm:
        return truth.epm[name]
    need = factor_levels(Format.parse(name))
    parts = sorted(((factor_levels(Format.parse(f)), f) for f in truth.epm), key=lambda p: -len(p[0]))
    rho, covered = 1.0, {}
    for levels, f in parts:
        if levels and all(need.get(k) == v for k, v in levels.items()) and not set(levels) & set(covered):
            rho *= truth.epm[f]
            covered.update(levels)
    if covered != need:
        raise InvalidInputError(f"the truth file has no EPM for {name!r} and its factors "
                                f"({', '.join(need.values())}) are not all covered by listed formats "
                                f"({', '.join(truth.epm) or 'none'}); add {name!r} to [epm]")
    return rho


def cost_factor(truth: LabTruth | None, fmt: str) -> float:
    """Per-format cost factor on 6 N D (the truth's ``[cost]``; 1 when not listed or not simulated)."""
    return 1.0 if truth is None else truth.cost.get(Format.parse(fmt).name, 1.0)


def simulate_run(truth: LabTruth, spec: dict, seed: int, run_id: int) -> dict:
    """A run result (the fields the study stores) for ``spec`` under ``truth``."""
    params, tokens, fmt = float(spec["params"]), float(spec["tokens"]), Format.parse(spec["format"]).name
    rng = np.random.default_rng([seed, run_id])
    mean = loss(params, tokens, true_epm(truth, fmt), truth.A, truth.B, truth.E, truth.alpha, truth.beta)
    value = float(mean * math.exp(rng.normal(0.0, truth.noise_sd))) if truth.noise_sd else float(mean)
    return {"status": "ok", "loss": value, "params": params, "tokens": tokens, "format": fmt,
            "flops": 6.0 * params * tokens, "seed": int(spec.get("seed", 0)), "simulated": True}
