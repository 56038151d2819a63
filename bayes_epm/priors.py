"""Priors for compression methods: what is believed about EPMs before (or besides) a study's runs.

Four sources, each kept with its provenance:

- **A prior file** (TOML; schema in the README), one ``[method.NAME]`` table per method::

      [method.mxq]
      kind = "quantizer"                    # usable in formats as w4:mxq, w4a4:mxq, ...
      [method.mxq.epm]                      # a prior on the method's factor at given levels
      w4 = { dist = "beta", alpha = 18, beta = 3 }
      a4 = { dist = "logitnormal", mu = 1.0, sigma = 0.5 }
      [method.mxq.gmse]                     # place the other levels by the error on Gaussian data
      quantizer = "my_pkg.quant:mxq"        # importable callable (tensor, bits) -> tensor, or "file.py:fn"
      [method.mxq.from_posterior]           # start from a previous study's posterior
      study = "studies/last-year"

  An ``epm`` level prior is the prior of that factor level (``w4`` is the weight factor of
  ``w4:mxq``, ``a4`` its activation factor): it replaces the capacity-curve prior of the level,
  so a format of that one level with no runs answers with exactly this distribution.
- **Gaussian error**: a method's GMSE at every bit width (seeded Monte Carlo, standard error kept),
  which the model maps through the capacity curve whose constants it learns across methods
  (:mod:`bayes_epm.gmse`): the method's levels are placed before it is ever trained.
- **A previous posterior**: a multivariate normal on the unconstrained scale over the law
  (log A, log B, log E, log alpha, log beta) and the method's levels (log rho), mean and covariance
  of the previous study's draws, so the correlations between the law and the EPMs are kept.
- **The literature** (``bayes_epm/data/literature.toml``, with citations): published EPMs of
  weight-only and weights+activations integer quantization and of unstructured and 2:4 sparsity,
  the default population priors. Each is a log-normal belief about its format's EPM (its range a
  90% interval), multiplied into the hierarchy's own prior wherever that format is fitted.

Validation is complete before anything is written: an unknown distribution or parameter, an
invalid value, a prior with more than :data:`MASS_TOLERANCE` of its mass outside (0, 1.5], an
unimportable or misbehaving callable, a missing or unconverged study: one
:class:`~bayes_epm.errors.InvalidInputError` that says what was wrong and what is valid.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import math
import re
import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bayes_epm.errors import InvalidInputError

EPM_UPPER = 1.5  # no format is worth 1.5 dense parameters per parameter
MASS_TOLERANCE = 0.01  # the largest share of a prior's mass allowed outside (0, EPM_UPPER]
DISTS = {  # distribution -> its parameters (a distribution of the EPM factor rho itself)
    "beta": ("alpha", "beta"),
    "logitnormal": ("mu", "sigma"),
    "lognormal": ("mu", "sigma"),
    "normal": ("mu", "sigma"),  # truncated to (0, 1.5] (it must hold >= 99% of its mass there)
    "uniform": ("lower", "upper"),
}
KINDS = ("quantizer", "sparsifier")
BITS = tuple(range(1, 9))
# where a sparsifier's GMSE is measured and stored on import (any other sparsity is measured when
# its callable imports, and otherwise takes the stated default prior)
SPARSITIES = tuple(round(0.05 * i, 2) for i in range(1, 20)) + (0.875, 0.9375)
LAW = ("log_A", "log_B", "log_E", "log_alpha", "log_beta")
LITERATURE_FILE = Path(__file__).parent / "data" / "literature.toml"
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_LEVEL_RE = re.compile(r"^(?P<factor>[wa])(?P<bits>\d+)$")
_SPARSE_LEVEL_RE = re.compile(r"^s(?P<frac>\d*\.?\d+)$")
_CALLABLE_KEY = {"quantizer": "quantizer", "sparsifier": "sparsifier"}  # [method.X.gmse] key per kind


# ------------------------------------------------------------------------------------ distributions
@dataclass(frozen=True)
class Dist:
    """A distribution of an EPM factor rho, by name and parameters (see :data:`DISTS`)."""

    name: str
    params: tuple[tuple[str, float], ...]

    @property
    def kw(self) -> dict[str, float]:
        return dict(self.params)

    def scipy(self):
        """The frozen ``scipy.stats`` distribution of rho."""
        from scipy import stats

        p = self.kw
        if self.name == "beta":
            return stats.beta(p["alpha"], p["beta"])
        if self.name == "logitnormal":
            return _LogitNormal(p["mu"], p["sigma"])
        if self.name == "lognormal":
            return stats.lognorm(s=p["sigma"], scale=math.exp(p["mu"]))
        if self.name == "normal":
            lo, hi = (0.0 - p["mu"]) / p["sigma"], (EPM_UPPER - p["mu"]) / p["sigma"]
            return stats.truncnorm(lo, hi, loc=p["mu"], scale=p["sigma"])
        return stats.uniform(p["lower"], p["upper"] - p["lower"])

    def pymc(self, name: str):
        """The PyMC random variable of rho with this distribution (inside a model context)."""
        import pymc as pm

        p = self.kw
        if self.name == "beta":
            return pm.Beta(name, alpha=p["alpha"], beta=p["beta"])
        if self.name == "logitnormal":
            return pm.LogitNormal(name, mu=p["mu"], sigma=p["sigma"])
        if self.name == "lognormal":
            return pm.LogNormal(name, mu=p["mu"], sigma=p["sigma"])
        if self.name == "normal":
            return pm.TruncatedNormal(name, mu=p["mu"], sigma=p["sigma"], lower=0.0, upper=EPM_UPPER)
        return pm.Uniform(name, lower=p["lower"], upper=p["upper"])

    def mass_outside(self) -> float:
        """Share of the stated distribution's mass outside (0, 1.5] (before any truncation)."""
        p = self.kw
        if self.name == "lognormal":
            return float(0.5 * math.erfc((math.log(EPM_UPPER) - p["mu"]) / (p["sigma"] * math.sqrt(2))))
        if self.name == "normal":
            cdf = lambda x: 0.5 * math.erfc(-(x - p["mu"]) / (p["sigma"] * math.sqrt(2)))  # noqa: E731
            return float(cdf(0.0) + 1.0 - cdf(EPM_UPPER))
        return 0.0  # beta, logitnormal: (0, 1); uniform: bounds checked

    def quantiles(self, qs=(0.05, 0.5, 0.95)) -> list[float]:
        return [float(v) for v in self.scipy().ppf(np.asarray(qs))]

    def describe(self) -> str:
        return f"{self.name}(" + ", ".join(f"{k}={v:g}" for k, v in self.params) + ")"

    def to_dict(self) -> dict:
        return {"dist": self.name, **self.kw}

    @classmethod
    def from_dict(cls, d: dict) -> "Dist":
        return cls(d["dist"], tuple((k, float(d[k])) for k in DISTS[d["dist"]]))


def _level_method(factor: str, level: str) -> str:
    """A level's method without parsing it as a format: ``w4:mxq`` -> mxq, ``s0.5:wanda`` -> wanda,
    ``s0.5`` or ``2:4`` -> magnitude (as :func:`bayes_epm.model.level_method`, which needs the registry)."""
    if factor == "sparsity":
        return level.split(":", 1)[1] if level.startswith("s") and ":" in level else "magnitude"
    return level.split(":", 1)[1]


class _LogitNormal:
    """rho = sigmoid(x), x ~ Normal(mu, sigma): the ppf/cdf that ``scipy.stats`` lacks."""

    def __init__(self, mu: float, sigma: float) -> None:
        from scipy import stats

        self._x = stats.norm(mu, sigma)

    def ppf(self, q):
        return 1.0 / (1.0 + np.exp(-self._x.ppf(q)))

    def cdf(self, rho):
        rho = np.asarray(rho, float)
        return self._x.cdf(np.log(rho) - np.log1p(-rho))

    def rvs(self, size, random_state):
        return 1.0 / (1.0 + np.exp(-self._x.rvs(size=size, random_state=random_state)))


def parse_dist(raw: Any, where: str) -> Dist:
    """Read and check one ``{dist = ..., <params>}`` table."""
    valid = "; ".join(f"{d}: {', '.join(p)}" for d, p in DISTS.items())
    if not isinstance(raw, dict) or "dist" not in raw:
        raise InvalidInputError(f"{where} = {raw!r} is not valid; it must be a table with 'dist' and its "
                                f"parameters ({valid})")
    name = raw["dist"]
    if name not in DISTS:
        raise InvalidInputError(f"{where}: unknown distribution {name!r}; valid: {valid}")
    expected = DISTS[name]
    given = sorted(set(raw) - {"dist"})
    if given != sorted(expected):
        raise InvalidInputError(f"{where}: {name} takes parameters {', '.join(expected)}; got "
                                f"{', '.join(given) or 'none'}")
    params = {}
    for key in expected:
        v = raw[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise InvalidInputError(f"{where}.{key} = {v!r} is not valid; it must be a finite number")
        params[key] = float(v)
    positive = {"beta": ("alpha", "beta"), "logitnormal": ("sigma",), "lognormal": ("sigma",),
                "normal": ("sigma",)}.get(name, ())
    for key in positive:
        if params[key] <= 0:
            raise InvalidInputError(f"{where}.{key} = {params[key]:g} is not valid; it must be > 0")
    if name == "uniform" and not 0.0 <= params["lower"] < params["upper"] <= EPM_UPPER:
        raise InvalidInputError(f"{where}: uniform(lower={params['lower']:g}, upper={params['upper']:g}) is not "
                                f"valid; an EPM prior needs 0 <= lower < upper <= {EPM_UPPER}")
    dist = Dist(name, tuple((k, params[k]) for k in expected))
    outside = dist.mass_outside()
    if outside > MASS_TOLERANCE:
        raise InvalidInputError(f"{where}: {dist.describe()} puts {outside:.1%} of its mass outside (0, {EPM_UPPER}] "
                                f"(at most {MASS_TOLERANCE:.0%} allowed): an EPM is positive and no format is "
                                f"worth {EPM_UPPER} dense parameters per parameter")
    return dist


# ------------------------------------------------------------------------------------ prior records
@dataclass(frozen=True)
class LevelPrior:
    """A prior on one factor level of a method (``factor`` weights/activations, ``level`` w4:mxq)."""

    method: str
    factor: str
    level: str
    dist: Dist
    source: str

    def to_dict(self) -> dict:
        return {"method": self.method, "factor": self.factor, "level": self.level, "prior": self.dist.to_dict(),
                "source": self.source}

    @classmethod
    def from_dict(cls, d: dict) -> "LevelPrior":
        return cls(d["method"], d["factor"], d["level"], Dist.from_dict(d["prior"]), d["source"])


@dataclass(frozen=True)
class Method:
    """A compression method a prior file introduced: its name and, when given, its callable and GMSE."""

    name: str
    kind: str
    callable: str = ""  # "pkg.mod:fn" or "/abs/file.py:fn"; "" when the file gave none
    # (where, GMSE, Monte Carlo standard error); where = bits (quantizer) or sparsity (sparsifier)
    gmse: tuple[tuple[float, float, float], ...] = ()
    source: str = ""

    @property
    def at(self) -> str:
        """What a GMSE row is measured at: ``bits`` or ``sparsity``."""
        return "bits" if self.kind == "quantizer" else "sparsity"

    def gmse_table(self) -> dict:
        return {(int(w) if self.kind == "quantizer" else float(w)): (g, se) for w, g, se in self.gmse}

    def to_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "callable": self.callable,
                "gmse": [{self.at: w, "gmse": g, "se": se} for w, g, se in self.gmse], "source": self.source}

    @classmethod
    def from_dict(cls, d: dict) -> "Method":
        at = "bits" if d["kind"] == "quantizer" else "sparsity"
        return cls(d["name"], d["kind"], d.get("callable", ""),
                   tuple((r[at], float(r["gmse"]), float(r["se"])) for r in d.get("gmse", [])), d.get("source", ""))


@dataclass(frozen=True)
class JointPrior:
    """A multivariate normal on the unconstrained scale from a previous study's posterior.

    ``names``: the law's ``log_A, log_B, log_E, log_alpha, log_beta``, then ``"<factor>/<level>"``
    (the level's log rho). ``mean`` and ``cov`` are those of the previous posterior's draws.
    """

    study: str
    names: tuple[str, ...]
    mean: tuple[float, ...]
    cov: tuple[tuple[float, ...], ...]
    n_draws: int
    source: str

    def levels(self) -> list[tuple[str, str]]:
        return [tuple(n.split("/", 1)) for n in self.names[len(LAW):]]

    def methods(self) -> set[str]:
        return {_level_method(k, lv) for k, lv in self.levels()}

    def correlation(self) -> np.ndarray:
        cov = np.asarray(self.cov)
        sd = np.sqrt(np.diag(cov))
        return cov / np.outer(sd, sd)

    def to_dict(self) -> dict:
        return {"study": self.study, "names": list(self.names), "mean": list(self.mean),
                "cov": [list(r) for r in self.cov], "n_draws": self.n_draws, "source": self.source}

    @classmethod
    def from_dict(cls, d: dict) -> "JointPrior":
        return cls(d["study"], tuple(d["names"]), tuple(float(v) for v in d["mean"]),
                   tuple(tuple(float(v) for v in r) for r in d["cov"]), int(d["n_draws"]), d["source"])


@dataclass(frozen=True)
class LiteraturePrior:
    """A published EPM of one format: log rho ~ Normal(log epm, sigma), [low, high] its 90% interval."""

    family: str
    format: str
    epm: float
    low: float
    high: float
    source: str
    quote: str = ""
    note: str = ""

    @property
    def mu(self) -> float:
        return math.log(self.epm)

    @property
    def sigma(self) -> float:
        return (math.log(self.high) - math.log(self.low)) / (2 * 1.6448536269514722)

    def to_dict(self) -> dict:
        return asdict(self)


def load_literature(path: str | Path = LITERATURE_FILE) -> tuple[LiteraturePrior, ...]:
    """The shipped literature table (checked: a broken table is a bug, reported as such)."""
    from bayes_epm.models.formats import Format

    raw = tomllib.loads(Path(path).read_text())
    out = []
    for i, e in enumerate(raw.get("entry", [])):
        entry = LiteraturePrior(**e)
        if not 0 < entry.low < entry.epm < entry.high <= EPM_UPPER:
            raise InvalidInputError(f"{path}: entry {i} ({entry.format}) needs 0 < low < epm < high <= {EPM_UPPER}")
        out.append(LiteraturePrior(**{**e, "format": Format.parse(entry.format).name}))
    formats = [e.format for e in out]
    if len(set(formats)) != len(formats):
        raise InvalidInputError(f"{path}: a format is listed twice")
    return tuple(out)


# ------------------------------------------------------------------------------------ the prior set
@dataclass(frozen=True)
class PriorSet:
    """Everything a study (or one fit) believes besides its runs: methods, level priors, an
    optional joint prior from a previous posterior, and whether the literature table is used."""

    methods: tuple[Method, ...] = ()
    levels: tuple[LevelPrior, ...] = ()
    joint: JointPrior | None = None
    literature: bool = True
    imports: tuple[tuple[str, str], ...] = ()  # (file, sha256) of every prior file imported, in order

    def method(self, name: str) -> Method | None:
        return next((m for m in self.methods if m.name == name), None)

    def literature_entries(self) -> tuple[LiteraturePrior, ...]:
        return LITERATURE if self.literature else ()

    def merge(self, other: "PriorSet", replace: bool = False) -> "PriorSet":
        """This set with ``other``'s methods added; a method already here is an error unless ``replace``."""
        replaced = {m.name for m in other.methods}
        clash = sorted(replaced & {m.name for m in self.methods})
        if clash and not replace:
            raise InvalidInputError(f"the study already has priors for method(s) {', '.join(clash)}; "
                                    "import with --replace to replace them")
        old = self.joint
        if old is not None and old.methods() & replaced:
            if not old.methods() <= replaced:
                raise InvalidInputError(f"the prior from the posterior of {old.study!r} covers methods "
                                        f"{', '.join(sorted(old.methods()))} together; replace them together")
            old = None
        joint = other.joint or old
        if other.joint is not None and old is not None:
            if other.joint.study != old.study:
                raise InvalidInputError(f"the study already has a prior from the posterior of {old.study!r}; a "
                                        f"second one ({other.joint.study!r}) would count the law twice")
            joint = posterior_prior(old.study, old.methods() | other.joint.methods())
        keep = lambda name: name not in replaced  # noqa: E731
        return PriorSet(methods=tuple(m for m in self.methods if keep(m.name)) + other.methods,
                        levels=tuple(lp for lp in self.levels if keep(lp.method)) + other.levels,
                        joint=joint, literature=self.literature and other.literature,
                        imports=self.imports + other.imports)

    def to_dict(self) -> dict:
        return {"methods": [m.to_dict() for m in self.methods], "levels": [lp.to_dict() for lp in self.levels],
                "joint": self.joint.to_dict() if self.joint else None, "literature": self.literature,
                "imports": [{"file": f, "sha256": h} for f, h in self.imports]}

    @classmethod
    def from_dict(cls, d: dict) -> "PriorSet":
        return cls(methods=tuple(Method.from_dict(m) for m in d.get("methods", [])),
                   levels=tuple(LevelPrior.from_dict(lp) for lp in d.get("levels", [])),
                   joint=JointPrior.from_dict(d["joint"]) if d.get("joint") else None,
                   literature=bool(d.get("literature", True)),
                   imports=tuple((i["file"], i["sha256"]) for i in d.get("imports", [])))


LITERATURE: tuple[LiteraturePrior, ...] = load_literature() if LITERATURE_FILE.is_file() else ()


# ------------------------------------------------------------------------------------ registration
def register(prior_set: PriorSet) -> None:
    """Make every method of ``prior_set`` usable in format names in this process.

    A method whose callable imports here becomes a trainable quantizer or sparsifier; one whose
    callable does not import (or that has none) is known by name, with its stored GMSE, but cannot
    be trained here. The set registered last wins a name (a method replaced in a study).
    """
    from bayes_epm.models import quantize, sparsity

    for m in prior_set.methods:
        if m.kind == "sparsifier":
            if m.name != sparsity.DEFAULT_SPARSIFIER:  # magnitude: level priors only
                sparsity.register_method_sparsifier(m.name, m.callable, _try_load(m.callable), m.gmse_table())
        elif m.name in quantize.PUBLISHED_QUANTIZERS or (m.name in quantize.QUANTIZERS
                                                        and m.name not in quantize.METHOD_QUANTIZERS):
            continue  # a built-in quantizer with level priors only
        else:
            quantize.register_method_quantizer(m.name, m.callable, _try_load(m.callable), m.gmse_table())


def _try_load(spec: str):
    """The callable, or None where it does not import here (known by name and stored GMSE; training
    it here then says why it cannot)."""
    if not spec:
        return None
    try:
        return load_callable(spec)
    except InvalidInputError:
        return None


def load_callable(spec: str, base_dir: str | Path = ".") -> Any:
    """Import ``"pkg.mod:fn"`` or ``"path/file.py:fn"`` (relative to ``base_dir``)."""
    if spec.count(":") != 1 or not all(spec.split(":")):
        raise InvalidInputError(f"quantizer = {spec!r} is not valid; it must be 'package.module:function' or "
                                "'path/to/file.py:function'")
    target, name = spec.split(":")
    try:
        if target.endswith(".py"):
            path = (Path(base_dir) / target).resolve()
            if not path.is_file():
                raise InvalidInputError(f"quantizer = {spec!r}: no file {str(path)!r}")
            modspec = importlib.util.spec_from_file_location(f"bayes_epm_method_{path.stem}", path)
            module = importlib.util.module_from_spec(modspec)
            modspec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
    except InvalidInputError:
        raise
    except Exception as err:  # an import error, or the module failed while importing
        raise InvalidInputError(f"quantizer = {spec!r} cannot be imported: {type(err).__name__}: {err}") from None
    fn = getattr(module, name, None)
    if not callable(fn):
        raise InvalidInputError(f"quantizer = {spec!r}: module {target!r} has no callable {name!r}")
    return fn


def _absolute_callable(spec: str, base_dir: Path) -> str:
    target, name = spec.split(":")
    return f"{(base_dir / target).resolve()}:{name}" if target.endswith(".py") else spec


def _check_callable(fn, spec: str, kind: str = "quantizer") -> None:
    """Call the method once on Gaussian rows: it must return a finite tensor of the same shape (and
    a sparsifier must prune the fraction asked, to 1%)."""
    import torch

    x = torch.randn(4, 1024, generator=torch.Generator().manual_seed(0))
    arg, what = (4, "4 bits") if kind == "quantizer" else (0.5, "sparsity 0.5")
    try:
        y = fn(x.clone(), arg)
    except Exception as err:
        raise InvalidInputError(f"{kind} {spec!r} failed on a (4, 1024) Gaussian tensor at {what}: "
                                f"{type(err).__name__}: {err}") from None
    if not isinstance(y, torch.Tensor) or y.shape != x.shape or not torch.isfinite(y).all():
        got = f"a tensor of shape {tuple(y.shape)}" if isinstance(y, torch.Tensor) else type(y).__name__
        raise InvalidInputError(f"{kind} {spec!r} must return a finite tensor of the input's shape "
                                f"(4, 1024) at {what}; it returned {got}"
                                f"{' with non-finite values' if isinstance(y, torch.Tensor) else ''}")
    if kind == "sparsifier" and abs(float((y == 0).float().mean()) - 0.5) > 0.01:
        raise InvalidInputError(f"sparsifier {spec!r} must zero the fraction of entries asked; at sparsity 0.5 "
                                f"it zeroed {float((y == 0).float().mean()):.3f}")


def measure_gmse(fn, kind: str = "quantizer", extra: tuple[float, ...] = ()) -> tuple[tuple[float, float, float], ...]:
    """GMSE and its Monte Carlo standard error of a method's function, measured directly (no
    registry, no cache): at every bit width (quantizer), or at :data:`SPARSITIES` and ``extra``
    (sparsifier). What is stored is then the only GMSE the method has, in every process.

    A point where the method raises, or where its GMSE is >= 1 (worse than outputting zeros, which
    the capacity curve cannot place), is left out; none left is an error."""
    from bayes_epm.gmse import N_DRAWS, pruning_gmse
    from bayes_epm.models.quantize import CallableQuantizer, gaussian_mse
    from bayes_epm.models.sparsity import CallableSparsifier

    method = CallableQuantizer(fn) if kind == "quantizer" else CallableSparsifier(fn)
    where = BITS if kind == "quantizer" else tuple(sorted(set(SPARSITIES) | set(extra)))
    rows, why = [], []
    for w in where:
        label = f"{w} bits" if kind == "quantizer" else f"sparsity {w:g}"
        try:
            g, se = gaussian_mse(method, w, n=N_DRAWS) if kind == "quantizer" else pruning_gmse(method, w)
        except Exception as err:
            why.append(f"{label}: {type(err).__name__}: {err}")
            continue
        if not (math.isfinite(g) and 0 < g < 1):
            why.append(f"{label}: GMSE {g:.3g} (needs 0 < GMSE < 1)")
            continue
        rows.append((w, g, se))
    if not rows:
        raise InvalidInputError(f"the {kind} could not be placed anywhere: {'; '.join(why)}")
    return tuple(rows)


# ------------------------------------------------------------------------------------ prior files
def load_prior_file(path: str | Path, literature: bool = True) -> PriorSet:
    """Read, check and resolve a prior file: callables imported and measured, previous posteriors
    summarised. Raises :class:`InvalidInputError` on the first problem. Registers nothing: the
    caller registers the set (:func:`register`) once it is accepted."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"no prior file at {str(path)!r}")
    return load_prior_text(path.read_bytes(), path, literature)


def load_prior_text(data: bytes, path: Path, literature: bool = True, code: bool = True,
                    studies_root: Path | None = None) -> PriorSet:
    """:func:`load_prior_file` on the bytes of a file; ``path`` names it in messages and anchors its
    relative references. A file sent over the network is read with ``code=False`` (a ``gmse``
    callable would run the sender's code on the server: refused) and ``studies_root`` (a
    ``from_posterior`` study must lie inside it)."""
    path = Path(path)
    try:
        raw = tomllib.loads(data.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise InvalidInputError(f"{path}: not valid TOML: {err}") from None
    unknown = sorted(set(raw) - {"method"})
    if unknown or not isinstance(raw.get("method"), dict) or not raw["method"]:
        raise InvalidInputError(f"{path}: a prior file holds [method.NAME] tables only (got "
                                f"{', '.join(map(repr, unknown)) or 'no method'})")
    methods, levels, joints = [], [], []
    for name, table in raw["method"].items():
        m, lv, joint = _method(name, table, path, code, studies_root)
        methods.append(m)
        levels.extend(lv)
        if joint is not None:
            joints.append(joint)
    studies = {j.study for j in joints}
    if len(studies) > 1:
        raise InvalidInputError(f"{path}: from_posterior names {len(studies)} studies "
                                f"({', '.join(sorted(studies))}); the law can come from one previous posterior only")
    joint = _merge_joints(joints) if joints else None
    return PriorSet(methods=tuple(methods), levels=tuple(levels), joint=joint, literature=literature,
                    imports=((str(path.resolve()), hashlib.sha256(data).hexdigest()),))


def _method(name: str, table: Any, path: Path, code: bool = True,
            studies_root: Path | None = None) -> tuple[Method, list[LevelPrior], JointPrior | None]:
    from bayes_epm.models import quantize, sparsity

    where = f"method.{name}"
    if not _NAME_RE.match(name):
        raise InvalidInputError(f"[{where}]: {name!r} is not a valid method name; it must match "
                                "[A-Za-z_][A-Za-z0-9_]* (it is written in formats as w4:NAME or s0.5:NAME)")
    if not isinstance(table, dict):
        raise InvalidInputError(f"[{where}] must be a table")
    valid = ("kind", "epm", "gmse", "from_posterior")
    unknown = sorted(set(table) - set(valid))
    if unknown:
        raise InvalidInputError(f"unknown key(s) {', '.join(map(repr, unknown))} in [{where}]; valid: {', '.join(valid)}")
    kind = table.get("kind")
    if kind not in KINDS:
        raise InvalidInputError(f"[{where}] kind = {kind!r} is not valid; valid: {', '.join(KINDS)}")
    if not any(k in table for k in ("epm", "gmse", "from_posterior")):
        raise InvalidInputError(f"[{where}] gives no prior; add [{where}.epm], [{where}.gmse] or "
                                f"[{where}.from_posterior]")
    if kind == "quantizer":
        builtin = (name in quantize.QUANTIZERS and not quantize.callable_origin(name)) or \
            name in quantize.PUBLISHED_QUANTIZERS
    else:
        builtin = name == sparsity.DEFAULT_SPARSIFIER
    levels = [_level_prior(name, kind, key, spec, where, path)
              for key, spec in _table(table.get("epm", {}), f"{where}.epm").items()]
    seen = [lp.level for lp in levels]
    twice = sorted({lv for lv in seen if seen.count(lv) > 1})
    if twice:
        raise InvalidInputError(f"[{where}.epm] gives level(s) {', '.join(twice)} more than one prior")
    callable_spec, gmse = "", ()
    if "gmse" in table:
        key = _CALLABLE_KEY[kind]
        g = _table(table["gmse"], f"{where}.gmse")
        if set(g) != {key} or not isinstance(g[key], str):
            raise InvalidInputError(f"[{where}.gmse] takes one key, {key} = 'package.module:function'; got "
                                    f"{', '.join(sorted(g)) or 'nothing'}")
        if builtin:
            raise InvalidInputError(f"[{where}.gmse]: {name!r} is a built-in {kind} with its own GMSE; a new "
                                    "method needs a new name")
        if not code:
            raise InvalidInputError(f"[{where}.gmse]: a prior file sent to the service cannot name a callable "
                                    "(it would run the sender's code on the server); import it on the server with "
                                    "`bayes-epm priors import`, or send epm priors only")
        fn = load_callable(g[key], path.parent)
        _check_callable(fn, g[key], kind)
        callable_spec = _absolute_callable(g[key], path.parent)
        extra = tuple(float(lp.level.split(":")[0][1:]) for lp in levels) if kind == "sparsifier" else ()
        gmse = measure_gmse(fn, kind, extra)
    joint = None
    if "from_posterior" in table:
        fp = _table(table["from_posterior"], f"{where}.from_posterior")
        if set(fp) != {"study"} or not isinstance(fp["study"], str):
            raise InvalidInputError(f"[{where}.from_posterior] takes one key, study = 'path/to/study'; got "
                                    f"{', '.join(sorted(fp)) or 'nothing'}")
        previous = path.parent / fp["study"]
        if studies_root is not None and not previous.resolve().is_relative_to(studies_root.resolve()):
            raise InvalidInputError(f"[{where}.from_posterior]: study {fp['study']!r} is not a study of this server "
                                    "(name it by its id, relative to the studies directory)")
        joint = posterior_prior(previous, name)
        both = {lv for _, lv in joint.levels()} & {lp.level for lp in levels}
        if both:
            raise InvalidInputError(f"[{where}]: level(s) {', '.join(sorted(both))} have both an epm prior and one "
                                    "from the previous posterior; keep one")
    return Method(name, kind, callable_spec, gmse, f"file {path.name}"), levels, joint


def _level_prior(name: str, kind: str, key: str, spec: Any, where: str, path: Path) -> LevelPrior:
    """One ``[method.X.epm]`` entry: ``w<bits>``/``a<bits>`` of a quantizer, ``s<fraction>`` of a sparsifier."""
    if kind == "quantizer":
        m = _LEVEL_RE.match(key)
        if m is None or int(m["bits"]) not in BITS:
            hint = " (w4a4 combines two levels: give w4 and a4)" if re.match(r"^w\d+a\d+$", key) else ""
            raise InvalidInputError(f"{where}.epm: {key!r} is not a level of a quantizer{hint}; valid: w<bits> "
                                    "(weights) or a<bits> (activations), bits 1-8")
        factor, level = ("weights" if m["factor"] == "w" else "activations"), f"{m['factor']}{int(m['bits'])}:{name}"
    elif name == "magnitude" and re.match(r"^\d+:\d+$", key):  # a prior on the built-in N:M pruning
        from bayes_epm.models.formats import Format

        try:
            factor, level = "sparsity", Format.parse(key).pattern
        except InvalidInputError as err:
            raise InvalidInputError(f"{where}.epm: {err}") from None
    else:
        m = _SPARSE_LEVEL_RE.match(key)
        if m is None or not 0.0 < round(float(m["frac"]), 6) < 1.0:
            dotted = isinstance(spec, dict) and "dist" not in spec
            hint = ' (TOML reads s0.5 = ... as a dotted key: quote it, "s0.5" = { ... })' if dotted else ""
            raise InvalidInputError(f"{where}.epm: {key!r} is not a level of a sparsifier{hint}; valid: "
                                    '"s<fraction>" with 0 < fraction < 1 (unstructured), e.g. "s0.5"')
        suffix = "" if name == "magnitude" else f":{name}"  # the built-in pruning's levels are s0.5, ...
        factor, level = "sparsity", f"s{round(float(m['frac']), 6):g}{suffix}"
    return LevelPrior(name, factor, level, parse_dist(spec, f"{where}.epm.{key}"), f"file {path.name}")


def _table(value: Any, where: str) -> dict:
    if not isinstance(value, dict):
        raise InvalidInputError(f"[{where}] must be a table")
    return value


def posterior_prior(study_dir: str | Path, method: str | set[str]) -> JointPrior:
    """The joint prior (the law and the levels of ``method``, one name or several) from the saved
    posterior of a study: one normal, so the cross-covariances between methods are kept too."""
    from bayes_epm.posterior_store import load_fit
    from bayes_epm.store import POSTERIOR_DIR

    study_dir = Path(study_dir)
    where = study_dir / POSTERIOR_DIR if (study_dir / POSTERIOR_DIR).is_dir() else study_dir
    if not where.is_dir():
        raise InvalidInputError(f"from_posterior: no study or fitted posterior at {str(study_dir)!r}")
    saved = load_fit(where, register_methods=False)  # the draws only: its methods stay out of this process
    if not saved.diagnostics.converged:
        raise InvalidInputError(f"from_posterior: the posterior in {str(where)!r} is not converged "
                                f"({'; '.join(saved.diagnostics.problems())}); a prior from it would be wrong")
    post = saved.idata.posterior
    methods = {method} if isinstance(method, str) else set(method)
    columns = [np.log(post[v].values.reshape(-1)) for v in ("A", "B", "E", "alpha", "beta")]
    names = list(LAW)
    for factor in ("sparsity", "weights", "activations"):
        coord = f"{factor}_level"
        if coord not in post.coords:
            continue
        for level in map(str, post.coords[coord].values):
            if _level_method(factor, level) in methods:
                names.append(f"{factor}/{level}")
                columns.append(post[f"log_rho_{factor}"].sel({coord: level}).values.reshape(-1))
    if len(names) == len(LAW):
        seen = sorted({str(lv) for f in ("sparsity", "weights", "activations") if f"{f}_level" in post.coords
                       for lv in post.coords[f"{f}_level"].values})
        raise InvalidInputError(f"from_posterior: the posterior in {str(where)!r} has no level of method(s) {', '.join(sorted(methods))} "
                                f"(its levels: {', '.join(seen) or 'none'})")
    x = np.column_stack(columns)
    cov = np.cov(x, rowvar=False)
    try:
        np.linalg.cholesky(cov)
    except np.linalg.LinAlgError:
        raise InvalidInputError(f"from_posterior: the posterior draws in {str(where)!r} are degenerate "
                                "(covariance not positive definite)") from None
    return JointPrior(str(study_dir.resolve()), tuple(names), tuple(map(float, x.mean(axis=0))),
                      tuple(tuple(map(float, r)) for r in cov), int(x.shape[0]), f"posterior of {study_dir.name}")


def _merge_joints(joints: list[JointPrior]) -> JointPrior:
    """Several methods from one study: one normal over the law and all their levels."""
    if len(joints) == 1:
        return joints[0]
    return posterior_prior(joints[0].study, set().union(*(j.methods() for j in joints)))


def level_priors(prior_set: PriorSet) -> dict[tuple[str, str], LevelPrior]:
    """(factor, level) -> its explicit prior."""
    return {(lp.factor, lp.level): lp for lp in prior_set.levels}


# ------------------------------------------------------------------------------------ reports
def curve_prior_quantiles(gmse: float, F_mu: float, C_mu: float, curve_sigma: float, level_sigma: float,
                          quantizer_sigma: float, quantized: bool = True, n: int = 20_000, seed: int = 0) -> list[float]:
    """5/50/95% of a level's EPM placed on the capacity curve at ``gmse`` under the curve's prior
    (before any fit: F, C, the level scatter and a quantizer's scale all drawn from their priors)."""
    from bayes_epm.gmse import log_capacity

    rng = np.random.default_rng(seed)
    F = np.exp(rng.normal(F_mu, curve_sigma, n) + (rng.normal(0.0, quantizer_sigma, n) if quantized else 0.0))
    C = np.exp(rng.normal(C_mu, curve_sigma, n))
    log_rho = log_capacity(math.log(gmse), F, C) + np.abs(rng.normal(0.0, level_sigma, n)) * rng.standard_normal(n)
    return [float(v) for v in np.quantile(np.exp(log_rho), [0.05, 0.5, 0.95])]


def summary(prior_set: PriorSet) -> dict:
    """Every prior of a set, one line each, with where it came from (``priors list``)."""
    rows = []
    for m in prior_set.methods:
        levels = [lp.level for lp in prior_set.levels if lp.method == m.name]
        joint = [lv for k, lv in prior_set.joint.levels() if _level_method(k, lv) == m.name] if prior_set.joint else []
        rows.append({"name": m.name, "kind": m.kind, "epm_levels": levels,
                     "gmse_at": {m.at: [w for w, _, _ in m.gmse]}, "callable": m.callable,
                     "from_posterior": prior_set.joint.study if joint else None, "source": m.source})
    lit = [{"name": e.format, "family": e.family, "epm": e.epm, "interval_90": [e.low, e.high], "source": e.source}
           for e in prior_set.literature_entries()]
    return {"methods": rows, "literature": lit, "literature_enabled": prior_set.literature,
            "imports": [{"file": f, "sha256": h} for f, h in prior_set.imports]}


def show(prior_set: PriorSet, name: str, curve: dict[str, float]) -> dict:
    """One method's priors in full, or one literature entry (``priors show``). ``curve``: the
    model's curve hyper-parameters (F_mu, C_mu, curve_sigma, level_sigma, quantizer_sigma)."""
    m = prior_set.method(name)
    if m is None:
        entry = next((e for e in prior_set.literature_entries() if e.format == name), None)
        if entry is None:
            known = [x.name for x in prior_set.methods] + [e.format for e in prior_set.literature_entries()]
            raise InvalidInputError(f"no prior named {name!r}; this study has: {', '.join(known) or 'none'}")
        sigma = entry.sigma
        q = [math.exp(entry.mu + z * sigma) for z in (-1.6448536269514722, 0.0, 1.6448536269514722)]
        return {"name": name, "kind": "literature", **entry.to_dict(),
                "prior": {"dist": "lognormal", "mu": entry.mu, "sigma": sigma}, "quantiles_5_50_95": q}
    out: dict[str, Any] = {"name": m.name, "kind": m.kind, "source": m.source, "callable": m.callable, "levels": []}
    for lp in prior_set.levels:
        if lp.method == name:
            out["levels"].append({"level": lp.level, "factor": lp.factor, "prior": lp.dist.to_dict(),
                                  "describe": lp.dist.describe(), "quantiles_5_50_95": lp.dist.quantiles(),
                                  "source": lp.source})
    out["gmse"] = [{m.at: w, "gmse": g, "se": se, "relative_se": se / g,
                    "epm_on_curve_prior_5_50_95": curve_prior_quantiles(g, **curve, quantized=m.kind == "quantizer")}
                   for w, g, se in m.gmse]
    if prior_set.joint and name in prior_set.joint.methods():
        j = prior_set.joint
        out["from_posterior"] = {"study": j.study, "n_draws": j.n_draws, "names": list(j.names),
                                 "mean": list(j.mean), "sd": [math.sqrt(j.cov[i][i]) for i in range(len(j.names))],
                                 "correlation": j.correlation().round(3).tolist()}
    return out
