"""Posterior queries: the EPM of any format (trained or not), comparisons, predicted loss.

A format that was fitted is read from the posterior directly. One that was not is built from
its factors, as the model defines it: each factor level that was fitted contributes its
posterior; a level never seen is drawn around its factor's capacity curve at its GMSE
(``C_k log tanh(F_k e^gamma_q log_{1/4} GMSE) + sigma_k z``, with the quantizer's posterior
``gamma_q`` if it was fitted, else one drawn from its prior); a factor with no data at all takes
its curve parameters from the prior; and the interaction ``delta ~ N(0, tau)`` is drawn fresh. Every
random draw is seeded, so a query answers the same way twice. Formats asked about together
(:func:`compare`, :func:`epm_draws_joint`, the decisions) share the draws of every level they have in
common, so that draw ``i`` is one consistent world for all of them.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import arviz as az
import numpy as np

from bayes_epm.errors import InvalidInputError
from bayes_epm.gmse import log_capacity
from bayes_epm.law import log_loss
from bayes_epm.model import QUANTIZED, Priors, factor_levels, level_gmse, level_priors_in_effect, level_quantizer
from bayes_epm.models.formats import Format
from bayes_epm.priors import LAW


def json_safe(value):
    """An answer ready for strict JSON (jq, JavaScript): NaN and infinities as null, numpy scalars as
    Python numbers, keys as strings. The CLI's ``--json`` and the HTTP service both print through it."""
    if hasattr(value, "item") and not isinstance(value, (str, bytes, dict, list, tuple)):  # numpy scalars
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def hdi_key(prob: float) -> str:
    """The name of an HDI in answers: ``hdi_90`` for 0.9."""
    return f"hdi_{round(prob * 100):g}"


@dataclass(frozen=True)
class Interval:
    mean: float
    sd: float
    lo: float
    hi: float
    prob: float

    def to_dict(self) -> dict:
        return {"mean": self.mean, "sd": self.sd, hdi_key(self.prob): [self.lo, self.hi]}


def summarize(draws: np.ndarray, prob: float = 0.9) -> Interval:
    """Mean, sd and highest-density interval of a 1-D array of draws."""
    if not 0 < prob < 1:
        raise InvalidInputError(f"hdi={prob!r} is not valid; it must be a probability in (0, 1)")
    flat = np.asarray(draws, dtype=float).ravel()
    lo, hi = az.hdi(flat, hdi_prob=prob)
    return Interval(float(flat.mean()), float(flat.std()), float(lo), float(hi), prob)


def _flat(idata: az.InferenceData, name: str, **sel) -> np.ndarray:
    var = idata.posterior[name]
    if sel:
        var = var.sel(**sel)
    return var.values.reshape(-1)


def _n_draws(idata: az.InferenceData) -> int:
    post = idata.posterior
    return int(post.sizes["chain"] * post.sizes["draw"])


def _prior_lognormal(rng: np.random.Generator, mu: float, sigma: float, n: int) -> np.ndarray:
    return np.exp(rng.normal(mu, sigma, n))


def _fitted_quantizers(idata: az.InferenceData) -> set[str]:
    """The quantizers of the levels the fit placed on a capacity curve (a fit saved before levels
    could have priors of their own has every level on it)."""
    post = idata.posterior
    curve = any(f"{k}_curve_level" in post.coords for k in QUANTIZED)
    coord = "{}_curve_level" if curve else "{}_level"
    return {level_quantizer(str(lv)) for k in QUANTIZED if coord.format(k) in post.coords
            for lv in post.coords[coord.format(k)].values}


def _run_levels(idata: az.InferenceData) -> set[tuple[str, str]]:
    """(factor, level) of every level a fitted format (one with runs) uses."""
    post = idata.posterior
    fitted = map(str, post.coords["fmt"].values) if "fmt" in post.coords else []
    return {kv for f in fitted for kv in factor_levels(Format.parse(f)).items()}


def _joint_level_draws(idata: az.InferenceData, joint, factor: str, level: str,
                       rng: np.random.Generator) -> np.ndarray:
    """log rho of a level of a previous posterior's joint prior that the fit does not hold: its
    normal conditioned on the fitted law's draws (the law and the level are correlated)."""
    names = list(joint.names)
    law = [names.index(n) for n in LAW]
    i = names.index(f"{factor}/{level}")
    mean, cov = np.asarray(joint.mean), np.asarray(joint.cov)
    x = np.column_stack([np.log(_flat(idata, v)) for v in ("A", "B", "E", "alpha", "beta")])
    gain = np.linalg.solve(cov[np.ix_(law, law)], cov[law, i])  # Sigma_LL^-1 Sigma_Li
    mu = mean[i] + (x - mean[law]) @ gain
    var = cov[i, i] - cov[i, law] @ gain
    return mu + math.sqrt(max(var, 0.0)) * rng.standard_normal(len(mu))


class _JointDraws:
    """Posterior-predictive draws of the EPMs of several formats, jointly: every random piece (an
    unseen level, a quantizer's scale drawn from its prior, a factor's curve drawn from its prior,
    tau when the fit has none) is drawn once and shared by every format that uses it, so that
    comparisons and decisions across formats see one consistent world per posterior draw. The
    interaction delta is each combined format's own. Each piece has its own seeded stream
    (:meth:`_rng`), so a format's draws are the same whichever formats are asked about with it."""

    def __init__(self, idata: az.InferenceData, priors: Priors | None, seed: int) -> None:
        self.idata, self.priors = idata, priors or Priors()
        self.post = idata.posterior
        self.n = _n_draws(idata)
        self.seed = seed
        self.memo: dict[tuple, object] = {}
        self.run_levels = _run_levels(idata)
        joint = self.priors.methods.joint
        self.joint_levels = set(joint.levels()) if joint else set()

    def _rng(self, key: tuple) -> np.random.Generator:
        """The random stream of one piece, seeded by the piece itself: its draws do not depend on which
        formats are asked about, or in which order."""
        return np.random.default_rng([self.seed, zlib.crc32(repr(key).encode())])

    def _once(self, key: tuple, make):
        """``make(rng)`` once per piece, with the piece's own stream."""
        if key not in self.memo:
            self.memo[key] = make(self._rng(key))
        return self.memo[key]

    def _gamma(self, quantizer: str) -> np.ndarray | float:
        """Draws of a quantizer's log-scale on F: its posterior if fitted (0 when it was the only
        one: the zero-sum constraint), else a draw from the prior."""
        post = self.post
        if "quantizer" in post.coords and quantizer in post.coords["quantizer"].values:
            return _flat(self.idata, "gamma", quantizer=quantizer)
        if quantizer in _fitted_quantizers(self.idata) and "quantizer" not in post.coords:
            return 0.0
        return self._once(("gamma", quantizer), lambda rng: rng.normal(0.0, self.priors.quantizer_sigma, self.n))

    def _curve(self, factor: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if f"F_{factor}" in self.post:
            return tuple(_flat(self.idata, f"{p}_{factor}") for p in ("F", "C", "sigma"))
        p, n = self.priors, self.n  # no run of this factor at all: its curve from the prior
        return self._once(("curve", factor), lambda rng: (_prior_lognormal(rng, p.F_mu, p.curve_sigma, n),
                                                          _prior_lognormal(rng, p.C_mu, p.curve_sigma, n),
                                                          np.abs(rng.normal(0.0, p.level_sigma, n))))

    def _level(self, factor: str, level: str, own: dict) -> np.ndarray:
        """Draws of log rho of one factor level."""
        coord = f"{factor}_level"
        if (factor, level) in own and (factor, level) not in self.run_levels:
            # a prior of its own and no run: independent of everything else, so the current prior
            # answers (also for a prior imported or replaced since the fit)
            dist = own[(factor, level)].dist
            return self._once(("level", factor, level),
                              lambda rng: np.log(dist.scipy().rvs(size=self.n, random_state=rng)))
        if coord in self.post.coords and level in self.post.coords[coord].values:
            return _flat(self.idata, f"log_rho_{factor}", **{coord: level})
        if (factor, level) in self.joint_levels:  # imported since the fit: conditional on the fitted law
            return self._once(("level", factor, level), lambda rng: _joint_level_draws(
                self.idata, self.priors.methods.joint, factor, level, rng))

        def unseen(rng: np.random.Generator) -> np.ndarray:
            F, C, scatter = self._curve(factor)
            if factor in QUANTIZED:
                F = F * np.exp(self._gamma(level_quantizer(level)))
            return log_capacity(math.log(level_gmse(factor, level)), F, C) + scatter * rng.standard_normal(self.n)

        return self._once(("level", factor, level), unseen)

    def _tau(self) -> np.ndarray:
        if "tau" in self.post:
            return _flat(self.idata, "tau")
        return self._once(("tau",), lambda rng: np.abs(rng.normal(0.0, self.priors.tau_sigma, self.n)))

    def __call__(self, fmt: str | Format) -> tuple[np.ndarray, bool]:
        fmt = Format.parse(fmt)
        if fmt.is_dense:
            return np.ones(self.n), True
        if "fmt" in self.post.coords and fmt.name in self.post.coords["fmt"].values:
            return _flat(self.idata, "epm", fmt=fmt.name), True
        levels = factor_levels(fmt)
        own = level_priors_in_effect(self.priors.methods, {k: [lv] for k, lv in levels.items()})
        log_rho = np.zeros(self.n)
        for factor, level in levels.items():
            log_rho = log_rho + self._level(factor, level, own)
        if len(levels) > 1:  # the interaction of a combined format, its own
            log_rho = log_rho + self._tau() * self._once(("delta", fmt.name), lambda rng: rng.standard_normal(self.n))
        return np.exp(log_rho), False


def epm_draws_joint(idata: az.InferenceData, formats: list[str | Format], priors: Priors | None = None,
                    seed: int = 0) -> dict[str, tuple[np.ndarray, bool]]:
    """``{name: (draws, observed)}`` for several formats, drawn jointly (see :class:`_JointDraws`):
    draw ``i`` of every format belongs to posterior draw ``i`` and to one draw of every unseen level."""
    draw = _JointDraws(idata, priors, seed)
    return {Format.parse(f).name: draw(f) for f in formats}


def epm_draws(idata: az.InferenceData, fmt: str | Format, priors: Priors | None = None,
              seed: int = 0) -> tuple[np.ndarray, bool]:
    """Posterior draws of the EPM of ``fmt`` (flattened over chains) and whether it was observed."""
    return _JointDraws(idata, priors, seed)(fmt)


def epm_source(idata: az.InferenceData, fmt: str | Format, priors: Priors | None = None) -> str:
    """Where an answer about ``fmt`` comes from: ``"posterior"`` (the fit has runs of it), ``"prior"``
    (no run touches any of its levels, and each has a prior of its own: imported, from a previous
    posterior, or the stated default of a method without GMSE) or ``"hierarchy"`` (predicted from
    fitted levels and the factors' capacity curves)."""
    fmt = Format.parse(fmt)
    post = idata.posterior
    fitted = list(map(str, post.coords["fmt"].values)) if "fmt" in post.coords else []
    if fmt.is_dense or fmt.name in fitted:
        return "posterior"
    priors = priors or Priors()
    levels = factor_levels(fmt)
    own = set(level_priors_in_effect(priors.methods, {k: [lv] for k, lv in levels.items()}))
    if priors.methods.joint:
        own |= set(priors.methods.joint.levels())
    run = _run_levels(idata)
    if all(kv in own and kv not in run for kv in levels.items()):
        return "prior"
    return "hierarchy"


def epm(idata: az.InferenceData, fmt: str | Format, hdi: float = 0.9, priors: Priors | None = None) -> dict:
    """``{"format", "mean", "sd", "hdi_<p>", "observed", "source"}`` for one format (see :func:`epm_source`)."""
    draws, observed = epm_draws(idata, fmt, priors)
    return {"format": Format.parse(fmt).name, **summarize(draws, hdi).to_dict(), "observed": observed,
            "source": epm_source(idata, fmt, priors)}


def compare(idata: az.InferenceData, a: str | Format, b: str | Format, hdi: float = 0.9,
            priors: Priors | None = None) -> dict:
    """P(EPM of ``a`` > EPM of ``b``) and the HDI of the difference ``EPM_a - EPM_b``."""
    draws = _JointDraws(idata, priors, seed=0)  # jointly: a and b may share a level never trained
    da, obs_a = draws(a)
    db, obs_b = draws(b)
    diff = da - db
    return {"a": Format.parse(a).name, "b": Format.parse(b).name, "p_a_greater": float((diff > 0).mean()),
            "difference": summarize(diff, hdi).to_dict(), "observed": {"a": obs_a, "b": obs_b}}


def predict(idata: az.InferenceData, params: float, tokens: float, fmt: str | Format, hdi: float = 0.9,
            priors: Priors | None = None) -> dict:
    """Expected loss of a run of ``params`` and ``tokens`` in ``fmt``, with its HDI."""
    for name, v in (("params", params), ("tokens", tokens)):
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
            raise InvalidInputError(f"{name}={v!r} is not valid; it must be a finite number > 0")
    rho, observed = epm_draws(idata, fmt, priors)
    law = {k: _flat(idata, k) for k in ("A", "B", "E", "alpha", "beta")}
    log_l = log_loss(math.log(params), math.log(tokens), np.log(rho), np.log(law["A"]), np.log(law["B"]),
                     np.log(law["E"]), law["alpha"], law["beta"])
    return {"format": Format.parse(fmt).name, "params": params, "tokens": tokens,
            "loss": summarize(np.exp(log_l), hdi).to_dict(), "observed": observed}


def law_summary(idata: az.InferenceData, hdi: float = 0.9) -> dict:
    """Mean, sd and HDI of E, A, B, alpha, beta (A and B un-centred)."""
    return {k: summarize(_flat(idata, k), hdi).to_dict() for k in ("E", "A", "B", "alpha", "beta")}
