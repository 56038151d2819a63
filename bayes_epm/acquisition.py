"""Which runs to train next: expected reduction of the targets' posterior variance per FLOP.

Candidates are the design space on a grid: every format of the space x sizes log-spaced between
the space's bounds x its tokens-per-parameter values. For a candidate x the model's predicted
log-loss ``f(x)`` is computed for every posterior draw (through :func:`bayes_epm.law.log_loss`
and :func:`bayes_epm.queries.epm_draws`, so formats never trained are scored from the hierarchy).

The score is the linear-Gaussian expected information of observing ``y = f(x) + noise``, read off
the joint ensemble of draws of the targets' EPMs ``t`` and of ``f`` (as in an ensemble Kalman
update): observing x reduces the variance of target k by ``Cov(t_k, f(x))^2 / (Var f(x) + s^2)``,
with ``s^2`` the posterior noise variance. A candidate's score is that reduction summed over the
targets whose 90% HDI is still wider than the goal, divided by its cost (6 N D times the format's
cost factor). A batch is chosen greedily: after each pick, the ensemble covariance is conditioned
on the picked run (a rank-one update), so the runs in flight are treated as pending observations
and the next pick goes where they will not already inform. This is written here (a few lines of
numpy) rather than taken from BoTorch, whose acquisition functions expect a GP surrogate, not
posterior draws of a parametric law.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from bayes_epm.config import Space
from bayes_epm.law import log_loss
from bayes_epm.queries import epm_draws, summarize

N_SIZES = 8
MAX_DRAWS = 1000


def size_grid(space: Space, n: int = N_SIZES) -> np.ndarray:
    lo, hi = space.params
    return np.geomspace(lo, hi, n)


def candidates(space: Space, cost: dict[str, float] | None = None, exclude: set[tuple] | None = None
               ) -> pd.DataFrame:
    """The design grid: ``params, tokens, tokens_per_param, format, flops`` (flops include the cost factor).

    ``exclude`` holds ``(params, tokens, format)`` points that must not be proposed again (runs
    that failed or diverged there).
    """
    cost = cost or {}
    rows = [{"params": float(n), "tokens": float(n * t), "tokens_per_param": float(t), "format": f,
             "flops": 6.0 * n * n * t * cost.get(f, 1.0)}
            for f in space.formats for n in size_grid(space) for t in space.tokens_per_param]
    table = pd.DataFrame(rows)
    if exclude:
        keep = [point_key(r) not in exclude for r in table.to_dict("records")]
        table = table[keep].reset_index(drop=True)
    return table


def point_key(r: dict) -> tuple:
    """A design point as a hashable key: ``(params, tokens, format)``."""
    return (round(float(r["params"]), 6), round(float(r["tokens"]), 6), r["format"])


def initial_design(space: Space) -> list[dict]:
    """A few space-filling runs that identify the law: dense at the smallest size with the least
    and the most tokens per parameter and at a second size; every other format at the smallest
    and the second size with the middle tokens per parameter.

    The second size is the grid size nearest 4x the smallest, at most the middle one: enough range
    in N to start the exponent, while the initial design's FLOPs stay near the smallest runs'
    (on 1e7-1e9 the middle size made the design 90% of a sweep's FLOPs:
    ``benchmarks/design_efficiency.py``); the acquisition adds larger runs where they pay."""
    sizes = size_grid(space)
    second = min(int(np.argmin(np.abs(np.log(sizes / (4 * sizes[0]))))), len(sizes) // 2)
    lo, mid = float(sizes[0]), float(sizes[second])
    tpp = space.tokens_per_param
    t_lo, t_mid, t_hi = tpp[0], tpp[len(tpp) // 2], tpp[-1]
    design = [(lo, t_lo, "dense"), (lo, t_hi, "dense"), (mid, t_mid, "dense")]
    design += [(n, t_mid, f) for f in space.formats if f != "dense" for n in (lo, mid)]
    return [{"params": n, "tokens": n * t, "format": f} for n, t, f in design]


def study_centre(space: Space) -> tuple[float, float]:
    """(log N, log D) a study centres the law on: the means over its initial design, fixed for the
    study so that every refit shares one compiled model. Centring where the runs are, not at the
    middle of the space, matters: on a 1e7-1e9 space whose runs sat at 1e7-4e7, centring at 1e8 made
    a_c and alpha a narrow ridge (step size 0.006, tree depth 9.6, no fit of 8 converged)."""
    design = initial_design(space)
    return (float(np.mean([np.log(d["params"]) for d in design])),
            float(np.mean([np.log(d["tokens"]) for d in design])))


@dataclass(frozen=True)
class TargetState:
    """A target's posterior EPM: mean, sd and 90% HDI ``[lo, hi]``."""

    format: str
    mean: float
    sd: float
    lo: float
    hi: float
    observed: bool

    @property
    def hdi_width(self) -> float:
        return self.hi - self.lo

    def to_dict(self) -> dict:
        return {"mean": self.mean, "sd": self.sd, "hdi_90": [self.lo, self.hi], "observed": self.observed}


def target_states(idata, targets: list[str], hdi: float = 0.9, priors=None) -> list[TargetState]:
    """Where each target's EPM stands; ``priors`` (the study's) answer for levels the fit does not hold."""
    out = []
    for t in targets:
        draws, observed = epm_draws(idata, t, priors)
        s = summarize(draws, hdi)
        out.append(TargetState(t, s.mean, s.sd, s.lo, s.hi, observed))
    return out


def _predicted_log_loss(idata, table: pd.DataFrame, idx: np.ndarray, priors=None) -> np.ndarray:
    """(draws, len(table)) predicted mean log-loss at each row of ``table``."""
    post = idata.posterior
    law = {k: post[k].values.reshape(-1)[idx] for k in ("A", "B", "E", "alpha", "beta")}
    log_rho = {f: np.log(epm_draws(idata, f, priors)[0][idx]) for f in table["format"].unique()}
    rho = np.stack([log_rho[f] for f in table["format"]], axis=1)
    return log_loss(np.log(table["params"].to_numpy(float))[None], np.log(table["tokens"].to_numpy(float))[None],
                    rho, np.log(law["A"])[:, None], np.log(law["B"])[:, None], np.log(law["E"])[:, None],
                    law["alpha"][:, None], law["beta"][:, None])


def choose_batch(idata, cands: pd.DataFrame, targets: list[str], k: int, *, pending: pd.DataFrame | None = None,
                 hdi_width: float = 0.0, budget_left: float = np.inf, seed: int = 0, priors=None) -> pd.DataFrame:
    """Greedily pick up to ``k`` candidates (each affordable within ``budget_left``); returns them
    with their ``score`` (variance reduction per FLOP at the time of the pick). ``priors``: the
    study's (:class:`~bayes_epm.model.Priors`), for formats whose levels the fit does not hold."""
    post = idata.posterior
    n = int(post.sizes["chain"] * post.sizes["draw"])
    idx = np.random.default_rng(seed).permutation(n)[:MAX_DRAWS]
    t_draws = np.stack([epm_draws(idata, t, priors)[0][idx] for t in targets], axis=1)  # (S, T)
    states = target_states(idata, targets, priors=priors)
    weight = np.array([1.0 if s.hdi_width > hdi_width else 0.0 for s in states])
    if not weight.any():
        weight[:] = 1.0
    pending = pending if pending is not None and len(pending) else None
    rows = pd.concat([cands, pending], ignore_index=True) if pending is not None else cands
    f = _predicted_log_loss(idata, rows, idx, priors)  # (S, C + P)
    z = np.concatenate([t_draws, f], axis=1)
    z = z - z.mean(axis=0)
    cov = z.T @ z / (len(idx) - 1)
    noise = float(np.mean(post["sigma"].values ** 2))
    n_t, n_c = t_draws.shape[1], len(cands)
    cand_cols = n_t + np.arange(n_c)

    def condition(col: int) -> None:
        c = cov[:, col].copy()
        cov[:] -= np.outer(c, c) / (c[col] + noise)

    if pending is not None:
        for j in range(len(pending)):
            condition(n_t + n_c + j)
    flops = cands["flops"].to_numpy(float)
    chosen, scores, spent = [], [], 0.0
    for _ in range(k):
        gain = (weight[:, None] * cov[:n_t][:, cand_cols] ** 2).sum(axis=0) / (np.diag(cov)[cand_cols] + noise)
        score = gain / flops
        score[flops > budget_left - spent] = -np.inf
        if chosen:  # distinct runs within a batch
            score[chosen] = -np.inf
        j = int(np.argmax(score))
        if not np.isfinite(score[j]):
            break
        chosen.append(j)
        scores.append(float(score[j]))
        spent += flops[j]
        condition(int(cand_cols[j]))
    return cands.iloc[chosen].assign(score=scores).reset_index(drop=True)
