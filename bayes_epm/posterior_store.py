"""A fitted posterior on disk: a directory holding

- ``posterior.nc``: the arviz InferenceData (NetCDF),
- ``runs.csv``: the canonical run table it was fitted to,
- ``fit.json``: diagnostics, priors, sampler settings and the package version.

Files are written to a temporary name and renamed, so a reader never sees half a fit.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import arviz as az
import pandas as pd

from bayes_epm import __version__
from bayes_epm.errors import InvalidInputError
from bayes_epm.inference import Diagnostics
from bayes_epm.model import Priors
from bayes_epm.priors import register

POSTERIOR, RUNS, META = "posterior.nc", "runs.csv", "fit.json"


@dataclass
class SavedFit:
    idata: az.InferenceData
    runs: pd.DataFrame
    diagnostics: Diagnostics
    priors: Priors
    meta: dict
    space_params: tuple[float, float] | None = None  # a study's [space] params range, when opened from one


def _atomic(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    write(tmp)
    os.replace(tmp, path)


def save_fit(out: str | Path, idata: az.InferenceData, runs: pd.DataFrame, diagnostics: Diagnostics,
             priors: Priors, settings: dict) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _atomic(out / RUNS, lambda p: runs.to_csv(p, index=False))
    _atomic(out / POSTERIOR, lambda p: idata.to_netcdf(str(p)))
    meta = {"version": __version__, "diagnostics": diagnostics.to_dict(), "priors": priors.to_dict(),
            "settings": settings}
    _atomic(out / META, lambda p: p.write_text(json.dumps(meta, indent=2)))
    return out / POSTERIOR


def load_fit(path: str | Path, register_methods: bool = True) -> SavedFit:
    """A saved fit. ``register_methods``: make its prior file's methods known in this process (for
    queries on their formats); a reader of the raw draws (a previous posterior as a prior) passes False."""
    path = Path(path)
    missing = [name for name in (POSTERIOR, RUNS, META) if not (path / name).is_file()]
    if not path.is_dir() or missing:
        raise InvalidInputError(f"no fitted posterior in {str(path)!r} (expected {', '.join((POSTERIOR, RUNS, META))}"
                                f"{'; missing ' + ', '.join(missing) if path.is_dir() else ''}); "
                                "run `bayes-epm fit RUNS --out DIR` first")
    meta = json.loads((path / META).read_text())
    priors = Priors.from_dict(meta["priors"])
    if register_methods:
        register(priors.methods)  # a method's quantizer name must parse before the fit is queried
    return SavedFit(idata=az.from_netcdf(str(path / POSTERIOR)), runs=pd.read_csv(path / RUNS),
                    diagnostics=Diagnostics(**meta["diagnostics"]), priors=priors, meta=meta)


def open_fit(path: str | Path) -> SavedFit:
    """The fit a query answers from: a directory written by ``bayes-epm fit``, or a study directory
    (its latest fit, answered with the study's current priors: a level imported since the fit is
    answered by its prior; and the study's size range). One code path for the CLI, Python and HTTP."""
    from bayes_epm.store import CONFIG, Study  # the store imports the config reader: only when needed

    path = Path(path)
    if not (path / CONFIG).is_file():
        return load_fit(path)
    with Study.open(path) as study:
        priors, space, fit_dir = study.priors, study.config.space.params, study.posterior_dir
    saved = load_fit(fit_dir)
    saved.priors = priors
    saved.space_params = tuple(space)
    return saved
