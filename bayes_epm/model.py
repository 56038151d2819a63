"""The hierarchical Bayesian model of the scaling law and the EPM of every format (PyMC).

Data: a canonical run table (:mod:`bayes_epm.runs`). The model, for run i in format c(i)::

    log L_i ~ StudentT(nu, mu_i, sigma)
    mu_i    = log_loss(log N_i - m_N, log D_i - m_D, log rho_c(i), a_c, b_c, e, alpha, beta)   (law.py)
    log rho_c = sum over factors k of log rho_k[level_k(c)] + delta_c        (log rho_dense = 0)
    log rho_k[l] = C_k log tanh(F_k e^gamma_q(l) log_{1/4} GMSE_l) + sigma_k z_l,   z_l ~ N(0, 1)
    delta_c = tau z_c,   z_c ~ N(0, 1)    (formats of two or more factors; 0 for one factor)
    gamma ~ ZeroSumNormal(quantizer_sigma)   (one per quantizer, shared by weights and activations)

Factors k: ``sparsity`` (levels such as ``s0.5``, ``2:4``), ``weights`` (``w4:rms``, ...) and
``activations`` (``a4:rms``, ...). Each level is pooled towards its factor's capacity curve
(Panferov et al. 2025, arXiv 2506.01863; see :mod:`bayes_epm.gmse`), so a level with few runs
borrows strength and a level never run gets a prediction from its GMSE. GMSE is measured on
Gaussian data, where a Hadamard rotation changes nothing, yet on real weights QuEST's trust
quantizer with a Hadamard rotation is worth far more than without one (the authors fit EPM 0.69 against 0.60 at
W4A4, 0.15 against 0.08 at W2A2): ``gamma_q`` scales each quantizer's curve (a shift in effective
bits, so it matters most at low bits), zero-sum so that F_k keeps the mean. tau, the interaction scale,
says whether factorisation holds on the data. log N and log D are centred on the data's means
(``a_c``, ``b_c`` are the log-coefficients at the centre); ``A = exp(a_c + alpha m_N)`` and
``B = exp(b_c + beta m_D)`` are reported un-centred as deterministics.

Priors (:class:`Priors`, every one overridable) are weakly informative on the scale of the
problem; those of the curve come from the literature (F 0.41, C 1.39 for Llama on C4).
``Priors.methods`` (:class:`~bayes_epm.priors.PriorSet`) adds what is known besides the runs:

- a level with a prior of its own (a prior file's ``epm`` table) takes ``log rho_k[l] = log r``,
  ``r`` from that distribution, in place of the curve; such levels enter the model with or
  without runs (a method's level is in the hierarchy before it is trained);
- a previous posterior's joint prior draws ``theta = mu + L z`` (``z ~ N(0, I)``, ``L L' = Sigma``)
  over log A, log B, log E, log alpha, log beta and its levels' log rho, replacing the independent
  priors of the law (``a_c = log A - alpha m_N``) and those levels' curve priors;
- each literature entry whose format is fitted, none of whose levels has a prior of its own, adds
  ``Normal(log rho_c | log epm, sigma)`` (a ``pm.Potential``: a prior on a derived quantity,
  multiplied into the hierarchy's).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, fields

import numpy as np
import pandas as pd
import pymc as pm
import pytensor.tensor as pt

from bayes_epm.gmse import log_capacity, quantizer_gmse, sparsity_gmse
from bayes_epm.law import log_loss
from bayes_epm.models.formats import FULL_BITS, Format
from bayes_epm.models.sparsity import DEFAULT_SPARSIFIER
from bayes_epm.priors import LAW, Dist, LevelPrior, PriorSet, _level_method, level_priors

# the prior of a method level that has no prior of its own and no GMSE to place it on the curve
UNPLACED = Dist("uniform", (("lower", 0.01), ("upper", 1.5)))

FACTORS = ("sparsity", "weights", "activations")
QUANTIZED = ("weights", "activations")


def level_quantizer(level: str) -> str:
    """The quantizer of a weight or activation level: ``"w4:rms"`` -> ``"rms"``."""
    return level.split(":", 1)[1]


def factor_levels(fmt: Format) -> dict[str, str]:
    """The level of each factor that ``fmt`` uses (factors it does not use are absent)."""
    levels = {}
    if fmt.is_sparse:
        levels["sparsity"] = fmt.pattern if fmt.pattern != "unstructured" else f"s{fmt.sparsity:g}"
        if fmt.sparsifier != DEFAULT_SPARSIFIER:
            levels["sparsity"] += f":{fmt.sparsifier}"
    if fmt.w_bits < FULL_BITS:
        levels["weights"] = f"w{fmt.w_bits}:{fmt.quantizer}"
    if fmt.a_bits < FULL_BITS:
        levels["activations"] = f"a{fmt.a_bits}:{fmt.quantizer}"
    return levels


def level_method(factor: str, level: str) -> str:
    """The method of a level: its quantizer (``w4:mxq`` -> ``mxq``) or sparsifier (``s0.5:wanda`` ->
    ``wanda``; ``s0.5``, ``2:4`` -> ``magnitude``)."""
    return _level_method(factor, level)


def level_gmse(factor: str, level: str) -> float:
    """GMSE of one factor level (see :mod:`bayes_epm.gmse`)."""
    if factor == "sparsity":
        fmt = Format.parse(level)
        return sparsity_gmse(fmt.sparsity, fmt.pattern, fmt.sparsifier)[0]
    bits, quantizer = level[1:].split(":")
    return quantizer_gmse(quantizer, int(bits))[0]


@dataclass(frozen=True)
class Priors:
    """Prior hyper-parameters. Each ``*_mu``/``*_sigma`` pair is a Normal on the log scale unless noted.

    alpha, beta: LogNormal(log 0.35, 0.5) -- the published exponents are 0.28-0.37.
    e (log E): Normal centred 0.3 below log of the smallest loss in the data, sd 0.5.
    a_c, b_c (log-coefficients at the data's centre): Normal(-1, 2): the reducible terms are
    between about 0.01 and 3 nats there.
    sigma (noise on log L): HalfNormal(0.05); nu (Student-t dof): Gamma(2, 0.1).
    F_k, C_k: LogNormal around the literature values 0.41 and 1.39, sd 0.5 on the log scale.
    sigma_k (level scatter around the curve): HalfNormal(0.1); tau (interaction): HalfNormal(0.05).
    gamma_q (a quantizer's log-scale on F): ZeroSumNormal(0.3), used when the data hold two or
    more quantizers on a curve (with one, its scale is F_k's).
    methods: level priors, a previous posterior's joint prior, the literature table (on by default);
    see the module docstring and :mod:`bayes_epm.priors`.
    """

    exponent_mu: float = math.log(0.35)
    exponent_sigma: float = 0.5
    e_offset: float = -0.3
    e_sigma: float = 0.5
    coef_mu: float = -1.0
    coef_sigma: float = 2.0
    noise_sigma: float = 0.05
    F_mu: float = math.log(0.41)
    C_mu: float = math.log(1.39)
    curve_sigma: float = 0.5
    level_sigma: float = 0.1
    tau_sigma: float = 0.05
    quantizer_sigma: float = 0.3
    methods: PriorSet = field(default_factory=PriorSet)

    def to_dict(self) -> dict:
        return {**{f.name: getattr(self, f.name) for f in fields(self) if f.name != "methods"},
                "methods": self.methods.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> "Priors":
        d = dict(d)
        methods = PriorSet.from_dict(d.pop("methods")) if "methods" in d else PriorSet()
        return cls(**d, methods=methods)


@dataclass
class ModelData:
    """The run table as the model sees it (all arrays of length n_runs unless noted)."""

    log_n: np.ndarray
    log_d: np.ndarray
    log_loss: np.ndarray
    fmt_idx: np.ndarray  # index into formats, -1 for dense
    formats: list[str]  # non-dense formats, in order
    levels: dict[str, list[str]] = field(default_factory=dict)  # factor -> its levels
    membership: dict[str, np.ndarray] = field(default_factory=dict)  # factor -> (n_formats,) level index or -1
    m_n: float = 0.0
    m_d: float = 0.0

    DATA = ("log_n_c", "log_d_c", "log_loss_obs", "fmt_idx", "weight", "e_mu")

    def structure(self, priors: "Priors") -> tuple:
        """What the compiled model depends on besides the data arrays (a hashable key)."""
        return (tuple(self.formats), tuple((k, tuple(v)) for k, v in self.levels.items()), round(self.m_n, 12),
                round(self.m_d, 12), priors)

    def inputs(self, priors: "Priors", pad_to: int | None = None) -> dict[str, np.ndarray]:
        """The data arrays the model reads, padded with zero-weight runs to ``pad_to`` (default: none)."""
        n = len(self.log_loss)
        size = n if pad_to is None else pad_to
        if size < n:
            raise ValueError(f"pad_to={size} is smaller than the {n} runs")

        def pad(a, fill, dtype):
            out = np.full(size, fill, dtype=dtype)
            out[:n] = a
            return out

        return {"log_n_c": pad(self.log_n - self.m_n, 0.0, float), "log_d_c": pad(self.log_d - self.m_d, 0.0, float),
                "log_loss_obs": pad(self.log_loss, 0.0, float), "fmt_idx": pad(self.fmt_idx, -1, np.int64),
                "weight": pad(np.ones(n), 0.0, float),
                "e_mu": np.asarray(float(self.log_loss.min()) + priors.e_offset)}

    @classmethod
    def from_runs(cls, runs: pd.DataFrame, centre: tuple[float, float] | None = None,
                  priors: "Priors | None" = None) -> "ModelData":
        """``centre``: (log N, log D) to centre on; default the data's means. A sweep fixes it per
        study so that the compiled model survives new runs (:mod:`bayes_epm.sampler`). The levels
        are those of the runs' formats and those with a prior of their own in ``priors`` (a
        method's level enters the hierarchy with its prior before any run of it)."""
        formats = sorted(f for f in runs["format"].unique() if f != "dense")
        index = {f: i for i, f in enumerate(formats)}
        parsed = {f: factor_levels(Format.parse(f)) for f in formats}
        levels = {k: {lv[k] for lv in parsed.values() if k in lv} for k in FACTORS}
        if priors is not None:
            for lp in priors.methods.levels:
                levels[lp.factor].add(lp.level)
            for k, lv in (priors.methods.joint.levels() if priors.methods.joint else []):
                levels[k].add(lv)
        levels = {k: sorted(v) for k, v in levels.items()}
        membership = {k: np.array([levels[k].index(parsed[f][k]) if k in parsed[f] else -1 for f in formats],
                                  dtype=np.int64) for k in FACTORS}
        log_n = np.log(runs["params"].to_numpy(float))
        log_d = np.log(runs["tokens"].to_numpy(float))
        return cls(log_n=log_n, log_d=log_d, log_loss=np.log(runs["loss"].to_numpy(float)),
                   fmt_idx=np.array([index.get(f, -1) for f in runs["format"]], dtype=np.int64),
                   formats=formats, levels={k: v for k, v in levels.items() if v},
                   membership={k: membership[k] for k in FACTORS if levels[k]},
                   m_n=float(log_n.mean() if centre is None else centre[0]),
                   m_d=float(log_d.mean() if centre is None else centre[1]))


def build_model(runs: pd.DataFrame, priors: Priors | None = None, *, centre: tuple[float, float] | None = None,
                pad_to: int | None = None) -> pm.Model:
    """The PyMC model of a canonical run table (see the module docstring).

    The run data live in ``pm.Data`` containers named :attr:`ModelData.DATA` (centred log N and log D,
    log-loss, format index, a weight that is 0 for padding, the centre of ``e``'s prior), so that
    :mod:`bayes_epm.sampler` can compile the log-density once with them as inputs. The likelihood is
    a ``pm.Potential`` of the weighted Student-t log-densities; runs padded in (``pad_to``) weigh 0.
    """
    priors = priors or Priors()
    return _build(ModelData.from_runs(runs, centre, priors), priors, pad_to)


def _safe(level: str) -> str:
    """A level as part of a variable name (NetCDF and arviz keep to [A-Za-z0-9_])."""
    return re.sub(r"[^A-Za-z0-9_]", "_", level)


def _law(data: ModelData, priors: Priors, x: dict):
    """The law's parameters: independent priors, or the joint normal of a previous posterior."""
    joint = priors.methods.joint
    if joint is None:
        alpha = pm.LogNormal("alpha", priors.exponent_mu, priors.exponent_sigma)
        beta = pm.LogNormal("beta", priors.exponent_mu, priors.exponent_sigma)
        e = pm.Normal("e", x["e_mu"], priors.e_sigma)
        a_c = pm.Normal("a_c", priors.coef_mu, priors.coef_sigma)
        b_c = pm.Normal("b_c", priors.coef_mu, priors.coef_sigma)
        return alpha, beta, e, a_c, b_c, None
    # theta = mean + L z, z ~ N(0, I): the previous posterior's normal, whitened for NUTS
    chol = np.linalg.cholesky(np.asarray(joint.cov))
    z = pm.Normal("z_joint", 0.0, 1.0, dims="joint")
    theta = pt.as_tensor(np.asarray(joint.mean)) + pt.dot(pt.as_tensor(chol), z)
    log_a, log_b, e, log_alpha, log_beta = (theta[i] for i in range(len(LAW)))
    alpha = pm.Deterministic("alpha", pt.exp(log_alpha))
    beta = pm.Deterministic("beta", pt.exp(log_beta))
    e = pm.Deterministic("e", e)
    a_c = pm.Deterministic("a_c", log_a - alpha * data.m_n)
    b_c = pm.Deterministic("b_c", log_b - beta * data.m_d)
    return alpha, beta, e, a_c, b_c, theta


def _build(data: ModelData, priors: Priors, pad_to: int | None) -> pm.Model:
    explicit = level_priors_in_effect(priors.methods, data.levels)
    joint = priors.methods.joint
    joint_at = {lv: len(LAW) + j for j, lv in enumerate(joint.levels())} if joint else {}
    curve = {k: [lv for lv in levels if (k, lv) not in explicit and (k, lv) not in joint_at]
             for k, levels in data.levels.items()}
    quantizers = sorted({level_quantizer(lv) for k in QUANTIZED for lv in curve.get(k, [])})
    combined = [f for f in data.formats if len(factor_levels(Format.parse(f))) > 1]
    coords = {"fmt": data.formats}
    coords.update({f"{k}_level": v for k, v in data.levels.items()})
    coords.update({f"{k}_curve_level": v for k, v in curve.items() if v})
    if combined:
        coords["combined"] = combined
    if joint:
        coords["joint"] = list(joint.names)
    if len(quantizers) > 1:
        coords["quantizer"] = quantizers
    with pm.Model(coords=coords) as model:
        x = {k: pm.Data(k, v) for k, v in data.inputs(priors, pad_to).items()}
        alpha, beta, e, a_c, b_c, theta = _law(data, priors, x)
        pm.Deterministic("E", pt.exp(e))
        pm.Deterministic("A", pt.exp(a_c + alpha * data.m_n))
        pm.Deterministic("B", pt.exp(b_c + beta * data.m_d))
        sigma = pm.HalfNormal("sigma", priors.noise_sigma)
        nu = pm.Gamma("nu", 2.0, 0.1)

        log_rho_fmt = pt.zeros(len(data.formats))
        gamma = pt.zeros(len(quantizers))
        if len(quantizers) > 1:  # zero-sum: the mean scale is F_k's
            gamma = pm.ZeroSumNormal("gamma", priors.quantizer_sigma, dims="quantizer")
        for k, levels in data.levels.items():
            value = {}
            if curve[k]:  # levels pooled towards the factor's capacity curve
                F = pm.LogNormal(f"F_{k}", priors.F_mu, priors.curve_sigma)
                C = pm.LogNormal(f"C_{k}", priors.C_mu, priors.curve_sigma)
                scatter = pm.HalfNormal(f"sigma_{k}", priors.level_sigma)
                log_gmse = np.log([level_gmse(k, lv) for lv in curve[k]])
                if k in QUANTIZED:  # each quantizer scales the curve's F by exp(gamma_q)
                    F = F * pt.exp(gamma[[quantizers.index(level_quantizer(lv)) for lv in curve[k]]])
                z = pm.Normal(f"z_{k}", 0.0, 1.0, dims=f"{k}_curve_level")
                on_curve = log_capacity(log_gmse, F, C, xp=pt) + scatter * z
                value.update({lv: on_curve[i] for i, lv in enumerate(curve[k])})
            for lv in levels:
                if (k, lv) in explicit:  # the level's own prior replaces the curve's
                    value[lv] = pt.log(explicit[(k, lv)].dist.pymc(f"rho_{k}_{_safe(lv)}"))
                elif (k, lv) in joint_at:
                    value[lv] = theta[joint_at[(k, lv)]]
            log_rho_level = pm.Deterministic(f"log_rho_{k}", pt.stack([value[lv] for lv in levels]),
                                             dims=f"{k}_level")
            padded = pt.concatenate([log_rho_level, pt.zeros(1)])  # index -1: factor unused
            log_rho_fmt = log_rho_fmt + padded[data.membership[k]]
        if combined:  # the interaction of factors: only a format of two or more has one
            tau = pm.HalfNormal("tau", priors.tau_sigma)
            z_fmt = pm.Normal("z_fmt", 0.0, 1.0, dims="combined")
            idx = [data.formats.index(f) for f in combined]
            log_rho_fmt = pt.inc_subtensor(log_rho_fmt[idx], tau * z_fmt)
        if data.formats:
            log_rho_fmt = pm.Deterministic("log_rho", log_rho_fmt, dims="fmt")
            pm.Deterministic("epm", pt.exp(log_rho_fmt), dims="fmt")
            lit = literature_in_effect(priors.methods, data.formats, explicit, joint_at)
            if lit:  # published EPMs: a log-normal prior on each such format's EPM
                idx = [data.formats.index(p.format) for p in lit]
                lit_logp = pm.logp(pm.Normal.dist(mu=np.array([p.mu for p in lit]),
                                                  sigma=np.array([p.sigma for p in lit])), log_rho_fmt[idx])
                pm.Potential("literature", lit_logp.sum())
        log_rho_run = pt.concatenate([log_rho_fmt, pt.zeros(1)])[x["fmt_idx"]]  # dense: log rho = 0
        mu = log_loss(x["log_n_c"], x["log_d_c"], log_rho_run, a_c, b_c, e, alpha, beta, logaddexp=pt.logaddexp)
        log_lik = pm.logp(pm.StudentT.dist(nu=nu, mu=mu, sigma=sigma), x["log_loss_obs"])
        pm.Potential("log_lik", (x["weight"] * log_lik).sum())
    return model


def level_priors_in_effect(prior_set: PriorSet, levels: dict[str, list[str]]) -> dict[tuple[str, str], LevelPrior]:
    """(factor, level) -> the explicit prior each level of ``levels`` takes: the prior file's, or,
    for a method level that has neither a prior nor a GMSE, :data:`UNPLACED` (stated, not hidden)."""
    out = level_priors(prior_set)
    joint = set(prior_set.joint.levels()) if prior_set.joint else set()
    for k, lvs in levels.items():
        for lv in lvs:
            if (k, lv) in out or (k, lv) in joint:
                continue
            method = prior_set.method(level_method(k, lv))
            if method is not None and not _has_gmse(k, lv):
                out[(k, lv)] = LevelPrior(method.name, k, lv, UNPLACED, "default: no prior and no GMSE at this level")
    return out


def _has_gmse(factor: str, level: str) -> bool:
    try:
        level_gmse(factor, level)
    except KeyError:
        return False
    return True


def literature_in_effect(prior_set: PriorSet, formats: list[str], explicit: dict, joint_at: dict):
    """The literature entries that apply to ``formats``: those listed, unless a level of the format
    has its own prior (the user's prior supersedes the table)."""
    own = set(explicit) | set(joint_at)
    out = []
    for entry in prior_set.literature_entries():
        if entry.format in formats and not set(factor_levels(Format.parse(entry.format)).items()) & own:
            out.append(entry)
    return out
