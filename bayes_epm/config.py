"""A study's configuration (``study.toml``) and a simulated lab's truth file, read strictly.

Every table and key is checked before anything starts: an unknown key, a value of the wrong type
or out of range, or a missing file is one :class:`~bayes_epm.errors.InvalidInputError` that names
the key, what was given and what is valid. TOML is read with the standard library's ``tomllib``.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bayes_epm.errors import InvalidInputError
from bayes_epm.models.formats import Format
from bayes_epm.priors import PriorSet, load_prior_file, register

BACKENDS = ("train", "simulate")


def _check_keys(table: dict, where: str, valid: dict[str, Any]) -> None:
    unknown = sorted(set(table) - set(valid))
    if unknown:
        raise InvalidInputError(f"unknown key(s) {', '.join(map(repr, unknown))} in [{where}]; "
                                f"valid: {', '.join(valid)}")


def _number(value: Any, key: str, *, positive: bool = True, integer: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and integer:
        ok = float(value).is_integer()
    if ok and positive:
        ok = value > 0
    if not ok:
        kind = "a positive integer" if integer else ("a finite number > 0" if positive else "a finite number")
        raise InvalidInputError(f"{key} = {value!r} is not valid; it must be {kind}")
    return int(value) if integer else float(value)


def _formats(value: Any, key: str) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise InvalidInputError(f"{key} = {value!r} is not valid; it must be a non-empty list of format names")
    out = []
    for v in value:
        try:
            out.append(Format.parse(v).name)
        except ValueError as err:
            raise InvalidInputError(f"{key}: {err}") from None
    if len(set(out)) != len(out):
        raise InvalidInputError(f"{key} = {value!r} names a format twice")
    return out


@dataclass(frozen=True)
class Space:
    formats: list[str]
    targets: list[str]
    params: tuple[float, float]
    tokens_per_param: list[float]


@dataclass(frozen=True)
class Budget:
    flops: float
    hdi_width: float = 0.05
    batch: int = 4
    max_iterations: int = 50


@dataclass(frozen=True)
class Backend:
    kind: str = "train"
    truth: str = ""  # path, relative to the config file, for kind = "simulate"
    device: str = "auto"  # for kind = "train"


@dataclass(frozen=True)
class RayConfig:
    address: str = ""
    num_gpus_per_run: float = 0.0


@dataclass(frozen=True)
class Fit:
    draws: int = 500
    tune: int = 500
    chains: int = 4


@dataclass(frozen=True)
class StudyConfig:
    space: Space
    budget: Budget
    backend: Backend = field(default_factory=Backend)
    ray: RayConfig = field(default_factory=RayConfig)
    fit: Fit = field(default_factory=Fit)
    seed: int = 0
    base_dir: str = "."  # where relative paths (the truth file) are resolved
    priors: PriorSet = field(default_factory=PriorSet)  # [priors]: a prior file's methods, the literature

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("base_dir")
        d["priors"] = self.priors.to_dict()
        return d


def _space(t: dict) -> Space:
    _check_keys(t, "space", {"formats": 0, "targets": 0, "params": 0, "tokens_per_param": 0})
    for key in ("formats", "params", "tokens_per_param"):
        if key not in t:
            raise InvalidInputError(f"[space] needs {key!r}")
    formats = _formats(t["formats"], "space.formats")
    if "dense" not in formats:
        raise InvalidInputError("space.formats must include 'dense': the law's exponents are pinned by dense runs")
    targets = _formats(t.get("targets", [f for f in formats if f != "dense"]), "space.targets")
    bad = [f for f in targets if f == "dense" or f not in formats]
    if bad:
        raise InvalidInputError(f"space.targets {bad} are not valid; a target must be a non-dense format of "
                                f"space.formats ({', '.join(formats)})")
    p = t["params"]
    if not (isinstance(p, list) and len(p) == 2):
        raise InvalidInputError(f"space.params = {p!r} is not valid; it must be [min, max]")
    lo, hi = (_number(v, "space.params") for v in p)
    if not lo < hi:
        raise InvalidInputError(f"space.params = {p!r} is not valid; min must be below max")
    tpp = t["tokens_per_param"]
    if not (isinstance(tpp, list) and tpp):
        raise InvalidInputError(f"space.tokens_per_param = {tpp!r} is not valid; it must be a non-empty list")
    tpp = sorted(_number(v, "space.tokens_per_param") for v in tpp)
    if len(tpp) < 2:
        raise InvalidInputError("space.tokens_per_param needs at least 2 values: with one, A and B are confounded")
    return Space(formats, targets, (lo, hi), tpp)


def _dataclass_from(cls, t: dict, where: str, checks: dict[str, Any]):
    _check_keys(t, where, checks)
    return cls(**{k: checks[k](v, f"{where}.{k}") for k, v in t.items()})


def load_config(path: str | Path, priors: PriorSet | None = None) -> StudyConfig:
    """Read and check a study's TOML config. ``priors``: the study's own prior set (its
    ``priors.json``), which then stands in for the config's ``[priors]`` table."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"no config file at {str(path)!r}")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise InvalidInputError(f"{path}: not valid TOML: {err}") from None
    return parse_config(raw, base_dir=path.parent, priors=priors)


def _priors(t: Any, base_dir: str | Path) -> PriorSet:
    """``[priors]``: ``file`` (a prior file, relative to the config) and ``literature`` (bool, default
    true: the shipped literature table as default population priors)."""
    if not isinstance(t, dict):
        raise InvalidInputError(f"[priors] must be a table; got {t!r}")
    _check_keys(t, "priors", {"file": 0, "literature": 0})
    literature = t.get("literature", True)
    if not isinstance(literature, bool):
        raise InvalidInputError(f"priors.literature = {literature!r} is not valid; it must be true or false")
    if "file" not in t:
        return PriorSet(literature=literature)
    if not isinstance(t["file"], str) or not t["file"]:
        raise InvalidInputError(f"priors.file = {t['file']!r} is not valid; it must be the path of a prior file")
    return load_prior_file(Path(base_dir) / t["file"], literature=literature)


def parse_config(raw: dict, base_dir: str | Path = ".", priors: PriorSet | None = None) -> StudyConfig:
    _check_keys(raw, "top level", {"space": 0, "budget": 0, "backend": 0, "ray": 0, "fit": 0, "seed": 0,
                                   "priors": 0})
    prior_set = priors if priors is not None else _priors(raw.get("priors", {}), base_dir)
    register(prior_set)  # a method's quantizer must be known before the space's formats are read
    for key in ("space", "budget"):
        if not isinstance(raw.get(key), dict):
            raise InvalidInputError(f"the config needs a [{key}] table")
    pos_int = lambda v, k: _number(v, k, integer=True)  # noqa: E731
    budget = _dataclass_from(Budget, raw["budget"], "budget", {
        "flops": _number, "hdi_width": _number, "batch": pos_int, "max_iterations": pos_int})
    if "flops" not in raw["budget"]:
        raise InvalidInputError("[budget] needs 'flops' (total training FLOPs)")

    def kind(v, k):
        if v not in BACKENDS:
            raise InvalidInputError(f"{k} = {v!r} is not valid; valid: {', '.join(BACKENDS)}")
        return v

    def text(v, k):
        if not isinstance(v, str):
            raise InvalidInputError(f"{k} = {v!r} is not valid; it must be a string")
        return v

    backend = _dataclass_from(Backend, raw.get("backend", {}), "backend",
                              {"kind": kind, "truth": text, "device": text})
    if backend.kind == "simulate":
        if not backend.truth:
            raise InvalidInputError("backend.kind = 'simulate' needs backend.truth, the path of a truth file")
        truth = Path(base_dir) / backend.truth
        if not truth.is_file():
            raise InvalidInputError(f"backend.truth: no truth file at {str(truth)!r}")
        load_truth(truth)  # checked now, so that a bad truth file starts nothing
    ray = _dataclass_from(RayConfig, raw.get("ray", {}), "ray", {
        "address": text, "num_gpus_per_run": lambda v, k: _number(v, k, positive=False)})
    if ray.num_gpus_per_run < 0:
        raise InvalidInputError(f"ray.num_gpus_per_run = {ray.num_gpus_per_run} is not valid; it must be >= 0")
    fit = _dataclass_from(Fit, raw.get("fit", {}), "fit", {"draws": pos_int, "tune": pos_int, "chains": pos_int})
    seed = raw.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise InvalidInputError(f"seed = {seed!r} is not valid; it must be an integer >= 0")
    return StudyConfig(space=_space(raw["space"]), budget=budget, backend=backend, ray=ray, fit=fit, seed=seed,
                       base_dir=str(Path(base_dir).resolve()), priors=prior_set)


@dataclass(frozen=True)
class LabTruth:
    """A simulated lab's truth: the law, the EPM of listed formats, and per-format cost factors."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float
    noise_sd: float
    epm: dict[str, float]
    cost: dict[str, float]


def load_truth(path: str | Path) -> LabTruth:
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise InvalidInputError(f"{path}: not valid TOML: {err}") from None
    _check_keys(raw, "truth file", {"law": 0, "epm": 0, "cost": 0})
    law = raw.get("law")
    if not isinstance(law, dict):
        raise InvalidInputError(f"{path}: the truth file needs a [law] table")
    keys = {"E": 0, "A": 0, "B": 0, "alpha": 0, "beta": 0, "noise_sd": 0}
    _check_keys(law, "law", keys)
    missing = [k for k in keys if k not in law]
    if missing:
        raise InvalidInputError(f"{path}: [law] needs {', '.join(missing)}")
    values = {k: _number(law[k], f"law.{k}", positive=k != "noise_sd") for k in keys}
    if values["noise_sd"] < 0:
        raise InvalidInputError(f"law.noise_sd = {values['noise_sd']} is not valid; it must be >= 0")
    epm = {Format.parse(k).name: _number(v, f"epm.{k!r}") for k, v in raw.get("epm", {}).items()}
    cost = {Format.parse(k).name: _number(v, f"cost.{k!r}") for k, v in raw.get("cost", {}).items()}
    return LabTruth(**values, epm=epm, cost=cost)
