"""Decisions: which format and model size to train or deploy under a budget, and how sure we are.

Two questions, both answered draw by draw from the posterior (the law's A, B, E, alpha, beta and
every candidate format's EPM, drawn jointly: :func:`bayes_epm.queries.epm_draws_joint`), then
summarised; nothing is a plug-in of posterior means.

- :func:`recommend`: for a memory budget and a training regime, each candidate format's model size,
  its predicted loss with an HDI and the posterior probability that it is the best choice (the
  fraction of posterior draws in which its loss is the lowest), ranked.
- :func:`frontier`: loss against stored bytes across formats, the bits each format stores per
  *effective* parameter, which format wins where, and where a step to fewer bits stops paying.

Storage (:func:`storage_bits`), for the law's N (the non-embedding parameters; token and position
embeddings, the KV cache and activations are not counted):

- Shape: the project's shape rule (:mod:`bayes_epm.models.transformer`) before rounding:
  ``L = max(1, (N / (12 * 32^2))^(1/3))`` layers and the width ``d`` that solves
  ``N = L (12 d^2 + 13 d) + 2 d``. Of N, the ``12 d^2 L`` weights of the linear layers are
  compressed; the ``13 d L + 2 d`` biases and LayerNorm parameters stay at 16 bits.
- Values: each kept weight at its bit width, 16 (bf16) when not quantized: ``(1 - s) w`` bits per
  weight position at sparsity ``s``.
- Quantization scales: one 16-bit scale per output row, as :mod:`bayes_epm.models.quantize` trains
  (per output channel). A block has ``9 d`` rows over ``12 d^2`` weights: ``12 / d`` bits per weight.
  Activation bits store nothing (they change compute, not memory).
- Sparsity metadata: unstructured, the smaller of a bitmask (1 bit per weight position) and a
  16-bit column index per kept weight (``16 (1 - s)``); N:M, a ``ceil(log2 M)``-bit position per
  kept weight (NVIDIA's 2:4 format stores 2 bits per kept value: ``(N/M) ceil(log2 M)`` bits per
  position), or the bitmask when that is smaller.

Training regimes (one of them; training costs ``C = 6 N D`` FLOPs in every format, because fake
quantization and masked sparsity train with dense arithmetic, as studies count their FLOPs):

- ``tokens=D``: each format trains the largest model its memory budget stores, on D tokens.
- ``tokens_per_param=R``: the same, on ``D = R N`` tokens.
- ``train_flops=C``: in each posterior draw the loss-minimising size for C,
  ``N* = [alpha A EPM^-alpha / (beta B (6/C)^beta)]^(1/(alpha+beta))`` (the loss is convex in
  ``log N``, so this is the only minimum), capped at the memory limit and floored at the smallest
  size considered, with ``D = C / (6 N)``. The size and tokens are reported with their spread over
  draws, and how often the memory limit binds.
- none: unlimited tokens, the capacity limit ``E + A (N EPM)^-alpha`` (the data term vanishes).
  Every format is then compared at what its stored model can reach, and under a memory budget the
  ranking is that of the bits per effective parameter; a regime that fixes a token count per
  parameter instead would give the formats that store more parameters more data (and compute).

Sizes below ``min_params`` are not considered: by default the smallest run of the fit (a study's
smallest size in its space), so that the law is never extrapolated downwards; upwards it is, and
an answer whose size or tokens (their HDI) leave the fitted runs' range says so (``"extrapolated"``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import arviz as az
import numpy as np

from bayes_epm.errors import InvalidInputError
from bayes_epm.law import log_loss
from bayes_epm.models.formats import FULL_BITS, Format
from bayes_epm.models.transformer import WIDTH_PER_LAYER
from bayes_epm.queries import epm_draws_joint, epm_source, hdi_key, summarize

SCALE_BITS = 16  # one bf16 scale per output row of a quantized weight
UNCOMPRESSED_BITS = 16  # biases and LayerNorm parameters, and weights that are not quantized (bf16)
INDEX_BITS = 16  # a column index of an unstructured sparse weight kept in coordinate form
FLOPS_PER_PARAM_TOKEN = 6  # C = 6 N D
STOPS_PAYING, PAYS = 0.1, 0.9  # P(a step to fewer bits lowers the bits per effective parameter)
LAW = ("A", "B", "E", "alpha", "beta")
_BYTE_UNITS = {"b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12,
               "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_bytes(value: str | float, name: str = "memory_bytes") -> float:
    """A byte count: a number (``2e9``) or a number with a unit (``512MB``, ``4GiB``; B, kB, MB, GB,
    TB are powers of 1000 and KiB, MiB, GiB, TiB powers of 1024)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    else:
        m = re.fullmatch(r"\s*([0-9.eE+-]+)\s*([A-Za-z]*)\s*", str(value))
        unit = m.group(2).lower() if m else ""
        try:
            number = float(m.group(1)) * (_BYTE_UNITS[unit] if unit else 1) if m else float("nan")
        except (KeyError, ValueError):
            number = float("nan")
        if not m or (unit and unit not in _BYTE_UNITS):
            raise InvalidInputError(f"{name}={value!r} is not valid; give a number of bytes, optionally with a "
                                    "unit: B, kB, MB, GB, TB (powers of 1000) or KiB, MiB, GiB, TiB (1024)")
    if not (math.isfinite(number) and number > 0):
        raise InvalidInputError(f"{name}={value!r} is not valid; it must be a finite number of bytes > 0")
    return number


def _positive(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise InvalidInputError(f"{name}={value!r} is not valid; it must be a finite number > 0")
    return float(value)


# --------------------------------------------------------------------------- storage


def _width(params: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Depth and width of the shape rule before rounding (module docstring)."""
    n = np.asarray(params, dtype=float)
    layers = np.maximum(1.0, (n / (12 * WIDTH_PER_LAYER**2)) ** (1 / 3))
    k = 13 * layers + 2
    d = (-k + np.sqrt(k * k + 48 * layers * n)) / (24 * layers)
    return layers, d


def storage_breakdown(fmt: str | Format, params) -> dict[str, np.ndarray]:
    """Bits stored for a model of ``params`` non-embedding parameters in ``fmt``, by part: ``values``,
    ``scales``, ``index`` (sparsity metadata) and ``uncompressed`` (biases, LayerNorm)."""
    fmt = Format.parse(fmt)
    layers, d = _width(params)
    weights = 12 * d * d * layers
    other = np.asarray(params, dtype=float) - weights
    keep = 1.0 - fmt.sparsity
    values = weights * keep * fmt.w_bits
    rows = 9 * d * layers  # qkv 3d, out d, fc 4d, fc2 d output rows per block
    scales = rows * SCALE_BITS if fmt.w_bits < FULL_BITS else np.zeros_like(weights)
    if not fmt.is_sparse:
        index_per_weight = 0.0
    elif fmt.pattern == "unstructured":
        index_per_weight = min(1.0, INDEX_BITS * keep)
    else:
        n_keep, m = (int(v) for v in fmt.pattern.split(":"))
        index_per_weight = min(1.0, n_keep / m * math.ceil(math.log2(m)))
    return {"values": values, "scales": scales, "index": weights * index_per_weight,
            "uncompressed": other * UNCOMPRESSED_BITS}


def storage_bits(fmt: str | Format, params) -> np.ndarray:
    """Total bits stored (see :func:`storage_breakdown` and the module docstring)."""
    return sum(storage_breakdown(fmt, params).values())


def bits_per_param(fmt: str | Format, params) -> np.ndarray:
    """Stored bits per non-embedding parameter (it falls slightly with size: the scales' and the
    uncompressed parameters' share shrinks as ``1/d``)."""
    return storage_bits(fmt, params) / np.asarray(params, dtype=float)


def max_params(fmt: str | Format, memory_bytes: float) -> float:
    """The largest N whose storage in ``fmt`` fits ``memory_bytes`` (storage grows with N: bisection
    on log N)."""
    budget = 8.0 * memory_bytes
    fits = lambda log_n: float(storage_bits(fmt, math.exp(log_n))) <= budget  # noqa: E731
    lo, hi = math.log(budget / 64.0), math.log(budget)
    while not fits(lo):  # bracket the answer: formats below 1 bit per parameter store more than 8 x bytes
        lo -= math.log(2.0)
    while fits(hi):
        lo, hi = hi, hi + math.log(2.0)
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return math.exp(lo)


def family(fmt: str | Format) -> str:
    """dense, weight-only, activations-only, weights+activations, sparse or sparse+quantized."""
    fmt = Format.parse(fmt)
    if fmt.is_dense:
        return "dense"
    if fmt.is_sparse:
        return "sparse+quantized" if fmt.is_quantized else "sparse"
    if fmt.a_bits < FULL_BITS:
        return "weights+activations" if fmt.w_bits < FULL_BITS else "activations-only"
    return "weight-only"


# --------------------------------------------------------------------------- the regimes


@dataclass(frozen=True)
class Regime:
    """How the candidates are trained: at most one of ``tokens``, ``tokens_per_param`` and
    ``train_flops``; none means unlimited tokens (module docstring)."""

    tokens: float | None = None
    tokens_per_param: float | None = None
    train_flops: float | None = None

    def __post_init__(self) -> None:
        given = {k: v for k, v in (("tokens", self.tokens), ("tokens_per_param", self.tokens_per_param),
                                   ("train_flops", self.train_flops)) if v is not None}
        if len(given) > 1:
            raise InvalidInputError(f"give at most one of tokens, tokens_per_param and train_flops, not "
                                    f"{len(given)} ({', '.join(given)})")
        for k, v in given.items():
            _positive(v, k)

    def to_dict(self) -> dict:
        return {"tokens": self.tokens, "tokens_per_param": self.tokens_per_param,
                "train_flops": self.train_flops, "unlimited_tokens": self.unlimited}

    @property
    def unlimited(self) -> bool:
        return self.tokens is None and self.tokens_per_param is None and self.train_flops is None

    def describe(self) -> str:
        if self.tokens is not None:
            return f"{self.tokens:.3g} training tokens"
        if self.train_flops is not None:
            return f"{self.train_flops:.3g} training FLOPs, compute-optimal size per posterior draw"
        if self.tokens_per_param is not None:
            return f"{self.tokens_per_param:.3g} training tokens per parameter"
        return "unlimited training tokens (the capacity limit; give tokens or train_flops for a finite run)"


@dataclass
class _World:
    """Posterior draws of the law and of every candidate's EPM, aligned draw by draw."""

    law: dict[str, np.ndarray]
    epm: dict[str, np.ndarray]
    observed: dict[str, bool]
    shape: tuple[int, int]  # (chains, draws)

    @classmethod
    def of(cls, fit, formats: list[str], seed: int) -> "_World":
        post = fit.idata.posterior
        joint = epm_draws_joint(fit.idata, formats, fit.priors, seed=seed)
        return cls(law={k: post[k].values.reshape(-1) for k in LAW},
                   epm={f: d for f, (d, _) in joint.items()}, observed={f: o for f, (_, o) in joint.items()},
                   shape=(post.sizes["chain"], post.sizes["draw"]))

    def loss(self, fmt: str, params, tokens) -> np.ndarray:
        law = self.law
        return np.exp(log_loss(np.log(params), np.log(tokens), np.log(self.epm[fmt]), np.log(law["A"]),
                               np.log(law["B"]), np.log(law["E"]), law["alpha"], law["beta"]))

    def compute_optimal(self, fmt: str, flops: float) -> np.ndarray:
        """The loss-minimising N for ``flops`` in each draw (module docstring)."""
        law = self.law
        a, b = law["alpha"], law["beta"]
        log_n = (np.log(a * law["A"]) - a * np.log(self.epm[fmt]) - np.log(b * law["B"])
                 - b * math.log(FLOPS_PER_PARAM_TOKEN / flops)) / (a + b)
        return np.exp(log_n)


@dataclass
class _Choice:
    """One format under one budget: its size and tokens per draw and the loss they reach."""

    params: np.ndarray
    tokens: np.ndarray
    loss: np.ndarray
    memory_bound: float  # fraction of draws in which the memory limit sets the size


def _choose(world: _World, fmt: str, cap: float, regime: Regime, min_params: float) -> _Choice:
    n_draws = len(world.law["A"])
    if regime.train_flops is None:
        params = np.full(n_draws, max(cap, min_params))
        tokens = np.full(n_draws, np.inf if regime.unlimited else
                         regime.tokens if regime.tokens is not None else regime.tokens_per_param * cap)
        return _Choice(params, tokens, world.loss(fmt, params, tokens), 1.0)
    best = world.compute_optimal(fmt, regime.train_flops)
    params = np.clip(best, min_params, max(cap, min_params))
    tokens = regime.train_flops / (FLOPS_PER_PARAM_TOKEN * params)
    return _Choice(params, tokens, world.loss(fmt, params, tokens), float(np.mean(best > cap)))


def _fits(cap: float, floor: float) -> bool:
    """Whether a format's largest size reaches the smallest considered (up to the bisection's rounding)."""
    return cap >= floor * (1 - 1e-9)


def _min_params(fit, min_params: float | None) -> float:
    if min_params is not None:
        return _positive(min_params, "min_params")
    if fit.space_params is not None:
        return float(fit.space_params[0])
    return float(fit.runs["params"].min())


def _candidates(fit, formats) -> list[str]:
    """The formats to decide between: those given (trained or not), else dense and every fitted format."""
    if formats:
        names = [Format.parse(f).name for f in formats]
    else:
        post = fit.idata.posterior
        names = ["dense"] + sorted(map(str, post.coords["fmt"].values)) if "fmt" in post.coords else ["dense"]
    return list(dict.fromkeys(names))


def _check_flops(regime: Regime, min_params: float) -> None:
    if regime.train_flops is not None and (math.log(regime.train_flops)
                                           < math.log(FLOPS_PER_PARAM_TOKEN) + 2 * math.log(min_params)):
        raise InvalidInputError(
            f"train_flops={regime.train_flops:.3g} is too small: it cannot train the smallest size considered "
            f"({min_params:.3g} parameters) on one token per parameter, which takes "
            f"{math.exp(math.log(FLOPS_PER_PARAM_TOKEN) + 2 * math.log(min_params)):.3g} FLOPs; give more FLOPs or a "
            "smaller min_params")


def _mcse(indicator: np.ndarray, shape: tuple[int, int]) -> float:
    """Monte Carlo standard error of a probability estimated from correlated MCMC draws."""
    if indicator.min() == indicator.max():
        return 0.0
    return float(np.ravel(az.mcse(indicator.reshape(shape).astype(float)))[0])


def _interval(values: np.ndarray, hdi: float) -> list[float]:
    iv = summarize(values, hdi)
    return [iv.lo, iv.hi]


def _diagnostics(fit) -> dict:
    diag = fit.diagnostics
    return {"converged": bool(diag.converged), "problems": list(diag.problems())}


def _outside(choice: _Choice, lo: float, hi: float, tokens: tuple[float, float], hdi: float, unlimited: bool) -> bool:
    """Whether the size's HDI (or the tokens', when finite) leaves the range of the fitted runs."""
    n_lo, n_hi = _interval(choice.params, hdi)
    out = n_hi > hi * 1.0001 or n_lo < lo / 1.0001
    if not unlimited:
        d_lo, d_hi = _interval(choice.tokens, hdi)
        out = out or d_hi > tokens[1] * 1.0001 or d_lo < tokens[0] / 1.0001
    return bool(out)


def _fitted_range(fit) -> tuple[float, float]:
    return float(fit.runs["params"].min()), float(fit.runs["params"].max())


# --------------------------------------------------------------------------- recommend


def recommend(fit, memory_bytes: float | str, *, tokens: float | None = None, tokens_per_param: float | None = None,
              train_flops: float | None = None, formats: list[str] | None = None, min_params: float | None = None,
              hdi: float = 0.9, seed: int = 0) -> dict:
    """The best format and size for a memory budget, with the odds.

    ``fit``: a :class:`~bayes_epm.posterior_store.SavedFit` (:func:`~bayes_epm.posterior_store.open_fit`
    opens a fit directory or a study). Returns ``{"budget", "recommendations", "excluded", "n_draws",
    "diagnostics"}``; each recommendation is ``{"format", "family", "params", "tokens", "bits_per_param",
    "loss": {"mean", "sd", "hdi_90"}, "p_best", "p_best_mcse", ...}``, best first (most probable best,
    then the lower mean loss). A format whose smallest considered size does not fit is in ``excluded``
    with the bytes it needs, never dropped silently.
    """
    memory_bytes = parse_bytes(memory_bytes)
    regime = Regime(tokens=tokens, tokens_per_param=tokens_per_param, train_flops=train_flops)
    floor = _min_params(fit, min_params)
    _check_flops(regime, floor)
    summarize(np.zeros(2), hdi)  # validates hdi before any work
    names = _candidates(fit, formats)
    caps = {f: max_params(f, memory_bytes) for f in names}
    fits = [f for f in names if _fits(caps[f], floor)]
    excluded = [{"format": f, "reason": f"the smallest size considered ({floor:.3g} parameters) needs "
                                        f"{float(storage_bits(f, floor)) / 8:.4g} bytes",
                 "bytes_needed": float(storage_bits(f, floor)) / 8} for f in names if f not in fits]
    if not fits:
        cheapest = min(excluded, key=lambda e: e["bytes_needed"])
        raise InvalidInputError(
            f"memory_bytes={memory_bytes:.4g} is too small for every candidate: the smallest size considered "
            f"({floor:.3g} parameters) needs at least {cheapest['bytes_needed']:.4g} bytes (in {cheapest['format']}); "
            "give more memory, or a smaller min_params (below the fitted runs the law is extrapolated)")
    world = _World.of(fit, fits, seed)
    choices = {f: _choose(world, f, caps[f], regime, floor) for f in fits}
    losses = np.column_stack([choices[f].loss for f in fits])
    winner = np.argmin(losses, axis=1)
    lo_fit, hi_fit = _fitted_range(fit)
    tok_fit = (float(fit.runs["tokens"].min()), float(fit.runs["tokens"].max()))
    key = hdi_key(hdi)
    out = []
    for j, f in enumerate(fits):
        c = choices[f]
        won = winner == j
        n_med, d_med = float(np.median(c.params)), float(np.median(c.tokens))
        out.append({
            "format": f, "family": family(f),
            "params": n_med, f"params_{key}": _interval(c.params, hdi),
            "tokens": None if regime.unlimited else d_med,
            f"tokens_{key}": None if regime.unlimited else _interval(c.tokens, hdi),
            "bits_per_param": float(bits_per_param(f, n_med)),
            "stored_bytes": float(storage_bits(f, n_med)) / 8,
            "loss": summarize(c.loss, hdi).to_dict(),
            "p_best": float(won.mean()), "p_best_mcse": _mcse(won, world.shape),
            "memory_bound": c.memory_bound,
            "epm": summarize(world.epm[f], hdi).to_dict(), "source": epm_source(fit.idata, f, fit.priors),
            "extrapolated": _outside(c, lo_fit, hi_fit, tok_fit, hdi, regime.unlimited),
        })
    out.sort(key=lambda r: (-r["p_best"], r["loss"]["mean"]))
    return {"budget": {"memory_bytes": memory_bytes, **regime.to_dict(), "regime": regime.describe(),
                       "min_params": floor, "fitted_params": [lo_fit, hi_fit]},
            "recommendations": out, "excluded": excluded, "n_draws": int(len(winner)),
            "diagnostics": _diagnostics(fit)}


# --------------------------------------------------------------------------- frontier


def _steps(rows: list[dict], bpe: dict[str, np.ndarray]) -> list[dict]:
    """Within each family (same quantizer and sparsity pattern, or same quantization for sparse
    formats), each step from a format to the next one storing fewer bits per parameter, starting
    from dense: the probability that the step lowers the bits per effective parameter (which
    decides the winner under a memory budget with tokens fixed or unlimited; with tokens tied to
    the size or to a FLOP budget the curve, not the step, is the answer). Steps that store no fewer
    bits (activation bits alone) are not steps."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        fmt = Format.parse(r["format"])
        fam = r["family"]
        if fam == "dense":
            continue
        if fam in ("sparse", "sparse+quantized"):
            key = (fam, fmt.pattern == "unstructured", fmt.sparsifier, fmt.w_bits, fmt.a_bits, fmt.quantizer)
        else:
            key = (fam, fmt.quantizer, fmt.w_bits == fmt.a_bits)
        groups.setdefault(key, []).append(r)
    steps = []
    has_dense = "dense" in bpe
    for members in groups.values():
        chain = sorted(members, key=lambda r: -r["bits_per_param"])
        if has_dense:
            chain = [{"format": "dense", "family": "dense", "bits_per_param": 16.0}] + chain
        for hi, lo in zip(chain, chain[1:]):
            if lo["bits_per_param"] >= hi.get("bits_per_param", 16.0):
                continue  # activation bits store nothing: no step to fewer bits to judge
            p = float(np.mean(bpe[lo["format"]] < bpe[hi["format"]]))
            verdict = "pays" if p >= PAYS else "stops paying" if p <= STOPS_PAYING else "uncertain"
            steps.append({"family": lo["family"], "from": hi["format"], "to": lo["format"], "p_pays": p,
                          "verdict": verdict})
    return steps


def frontier(fit, *, formats: list[str] | None = None, tokens: float | None = None,
             tokens_per_param: float | None = None, train_flops: float | None = None,
             budgets: list[float | str] | None = None, min_bytes: float | str | None = None,
             max_bytes: float | str | None = None, points: int = 24, min_params: float | None = None,
             hdi: float = 0.9, seed: int = 0) -> dict:
    """Loss against stored bytes across formats, with bands.

    Returns ``{"regime", "reference_params", "formats", "steps", "curve", "regions", "n_draws",
    "diagnostics"}``:

    - ``formats``: per format, ``bits_per_param`` at ``reference_params`` (the largest fitted run), its
      EPM and ``bits_per_effective_param`` (bits per parameter / EPM: what one dense-equivalent
      parameter costs to store; under a memory budget with tokens fixed the format with the fewest
      wins at every size), ``p_lowest``, the probability that it has the fewest, and
      ``p_lowest_in_family``, the same among the formats of its family (weight-only, ...).
    - ``steps``: within each family, from dense down the bit widths: ``p_pays`` = P(the step lowers
      the bits per effective parameter) and a verdict (pays at >= 0.9, stops paying at <= 0.1).
    - ``curve``: per memory budget (``budgets``, or ``points`` log-spaced from ``min_bytes`` to
      ``max_bytes``, by default from the smallest model in the cheapest format to the largest run in
      dense), each fitting format's size and loss, the probability that each is best, and the
      ``envelope`` (the best loss reachable, per draw).
    - ``regions``: runs of consecutive budgets with the same most probable winner.
    """
    regime = Regime(tokens=tokens, tokens_per_param=tokens_per_param, train_flops=train_flops)
    floor = _min_params(fit, min_params)
    _check_flops(regime, floor)
    summarize(np.zeros(2), hdi)
    if isinstance(points, bool) or not isinstance(points, int) or not 2 <= points <= 200:
        raise InvalidInputError(f"points={points!r} is not valid; it must be an integer from 2 to 200")
    names = _candidates(fit, formats)
    lo_fit, hi_fit = _fitted_range(fit)
    if (min_bytes is None) != (max_bytes is None):
        raise InvalidInputError("give both min_bytes and max_bytes, or neither")
    if budgets is not None:
        grid = sorted(parse_bytes(b, "budget") for b in budgets)
    elif min_bytes is not None:
        lo, hi = parse_bytes(min_bytes, "min_bytes"), parse_bytes(max_bytes, "max_bytes")
        if not lo < hi:
            raise InvalidInputError(f"min_bytes ({lo:.4g}) must be below max_bytes ({hi:.4g})")
        grid = list(np.geomspace(lo, hi, points))
    else:
        lo = min(float(storage_bits(f, floor)) for f in names) / 8
        hi = max(lo * 100, float(storage_bits("dense", hi_fit)) / 8)
        grid = list(np.geomspace(lo, hi, points))
    world = _World.of(fit, names, seed)
    key = hdi_key(hdi)

    rows, bpe = [], {}
    for f in names:
        bpp = float(bits_per_param(f, hi_fit))
        bpe[f] = bpp / world.epm[f]
        rows.append({"format": f, "family": family(f), "bits_per_param": bpp,
                     "epm": summarize(world.epm[f], hdi).to_dict(), "observed": world.observed[f],
                     "source": epm_source(fit.idata, f, fit.priors),
                     "bits_per_effective_param": summarize(bpe[f], hdi).to_dict()})
    lowest = np.argmin(np.column_stack([bpe[f] for f in names]), axis=1)
    for j, r in enumerate(rows):
        r["p_lowest"] = float(np.mean(lowest == j))
    for fam in {r["family"] for r in rows}:
        members = [r for r in rows if r["family"] == fam]
        in_family = np.argmin(np.column_stack([bpe[r["format"]] for r in members]), axis=1)
        for j, r in enumerate(members):
            r["p_lowest_in_family"] = float(np.mean(in_family == j))
    rows.sort(key=lambda r: -r["bits_per_param"])

    curve = []
    for budget in grid:
        caps = {f: max_params(f, budget) for f in names}
        fitting = [f for f in names if _fits(caps[f], floor)]
        point = {"memory_bytes": float(budget), "formats": {}, "best": None, "envelope": None}
        if fitting:
            choices = {f: _choose(world, f, caps[f], regime, floor) for f in fitting}
            losses = np.column_stack([choices[f].loss for f in fitting])
            winner = np.argmin(losses, axis=1)
            for j, f in enumerate(fitting):
                c = choices[f]
                point["formats"][f] = {"params": float(np.median(c.params)),
                                       "loss": summarize(c.loss, hdi).to_dict(), "p_best": float(np.mean(winner == j))}
            point["best"] = max(fitting, key=lambda f: point["formats"][f]["p_best"])
            point["envelope"] = summarize(losses.min(axis=1), hdi).to_dict()
        curve.append(point)

    regions: list[dict] = []
    for point in curve:
        best = point["best"]
        if best is None:
            continue
        p = point["formats"][best]["p_best"]
        if regions and regions[-1]["format"] == best:
            regions[-1]["to_bytes"] = point["memory_bytes"]
            regions[-1]["p_best_min"] = min(regions[-1]["p_best_min"], p)
        else:
            regions.append({"format": best, "family": family(best), "from_bytes": point["memory_bytes"],
                            "to_bytes": point["memory_bytes"], "p_best_min": p})
    return {"regime": {**regime.to_dict(), "description": regime.describe(), "min_params": floor},
            "reference_params": hi_fit, "hdi": key, "formats": rows, "steps": _steps(rows, bpe),
            "curve": curve, "regions": regions, "n_draws": int(len(lowest)), "diagnostics": _diagnostics(fit)}


__all__ = ["Regime", "bits_per_param", "family", "frontier", "max_params", "parse_bytes",
           "recommend", "storage_bits", "storage_breakdown"]
