"""A fitted posterior on disk: a directory holding

- ``posterior.nc``: the arviz InferenceData (NetCDF),
- ``runs.csv``: the canonical run table it was fitted to,
- ``fit.json``: diagnostics, priors, sampler settings and the package version.

Files are written to a temporary name and renamed, so a reader never sees half a file. A study's
fit is *versioned* (:func:`save_fit` with ``versioned=True``): each fit is written whole into
``fits/<n>/`` beside it and ``posterior`` is a symbolic link swapped atomically to the newest, so a
reader (a query served while the sweep refits) resolves the link once and reads one fit, never the
posterior of one with the runs or priors of another. The two newest versions are kept.
"""

from __future__ import annotations

import json
import os
import threading
import shutil
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path

import arviz as az
import pandas as pd

from bayes_epm import __version__
from bayes_epm.errors import NotFittedError
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
    path: Path | None = None  # the directory read (a versioned fit's link, resolved)


def _atomic(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    write(tmp)
    os.replace(tmp, path)


KEEP_VERSIONS = 2


def save_fit(out: str | Path, idata: az.InferenceData, runs: pd.DataFrame, diagnostics: Diagnostics,
             priors: Priors, settings: dict, versioned: bool = False) -> Path:
    """Write a fit to ``out`` (a directory); ``versioned``: as a new version behind the link ``out``
    (module docstring). Returns the path of the posterior file."""
    out = Path(out)
    if versioned:
        return _save_version(out, idata, runs, diagnostics, priors, settings)
    out.mkdir(parents=True, exist_ok=True)
    _atomic(out / RUNS, lambda p: runs.to_csv(p, index=False))
    _atomic(out / POSTERIOR, lambda p: idata.to_netcdf(str(p)))
    meta = {"version": __version__, "diagnostics": diagnostics.to_dict(), "priors": priors.to_dict(),
            "settings": settings}
    _atomic(out / META, lambda p: p.write_text(json.dumps(meta, indent=2)))
    return out / POSTERIOR


def _save_version(link: Path, idata, runs, diagnostics, priors, settings) -> Path:
    versions = link.parent / "fits"
    versions.mkdir(exist_ok=True)
    if link.is_dir() and not link.is_symlink():  # a study from before versions: its fit becomes one
        os.replace(link, versions / "000000")
    numbers = sorted(int(p.name) for p in versions.iterdir() if p.name.isdigit())
    new = versions / f"{(numbers[-1] + 1) if numbers else 1:06d}"
    tmp = versions / f".{new.name}.tmp-{os.getpid()}"
    save_fit(tmp, idata, runs, diagnostics, priors, settings)
    os.replace(tmp, new)
    tmp_link = link.with_name(f".{link.name}.link-{os.getpid()}")
    tmp_link.unlink(missing_ok=True)
    tmp_link.symlink_to(Path("fits") / new.name)  # relative: the study directory can be moved
    os.replace(tmp_link, link)  # atomic: a reader sees the old fit or the new one
    for old in sorted(p for p in versions.iterdir() if p.name.isdigit())[:-KEEP_VERSIONS]:
        shutil.rmtree(old, ignore_errors=True)
    return link / POSTERIOR


_CACHE: "OrderedDict[tuple, SavedFit]" = OrderedDict()
_CACHE_SIZE = 8
_CACHE_LOCK = threading.Lock()
_READ_LOCK = threading.RLock()  # HDF5 (under NetCDF) is not thread-safe: one reader at a time


def load_fit(path: str | Path, register_methods: bool = True, cached: bool = False) -> SavedFit:
    """A saved fit. ``register_methods``: make its prior file's methods known in this process (for
    queries on their formats); a reader of the raw draws (a previous posterior as a prior) passes False.
    ``cached``: reuse a fit read before in this process while its files are unchanged (a server's
    queries); the returned object is a shallow copy, so a caller may set its ``priors``.

    A versioned fit's link is resolved once, so every file comes from one version. Should that
    version be removed while it is read (the writer saved two newer ones meanwhile), the link is
    resolved again and the newest read instead."""
    link = Path(path)
    for attempt in range(5):
        resolved = link.resolve()
        try:
            return _load(resolved, register_methods, cached)
        except (OSError, NotFittedError):
            if attempt == 4 or not link.is_symlink() or link.resolve() == resolved:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def _load(path: Path, register_methods: bool, cached: bool) -> SavedFit:
    missing = [name for name in (POSTERIOR, RUNS, META) if not (path / name).is_file()]
    if not path.is_dir() or missing:
        raise NotFittedError(f"no fitted posterior in {str(path)!r} (expected {', '.join((POSTERIOR, RUNS, META))}"
                             f"{'; missing ' + ', '.join(missing) if path.is_dir() else ''}); "
                             "run `bayes-epm fit RUNS --out DIR` first")
    if not cached:
        return _read(path, register_methods)
    key = (str(path), register_methods, *((path / n).stat().st_mtime_ns for n in (POSTERIOR, RUNS, META)))
    with _CACHE_LOCK:
        hit = _CACHE.get(key)
        if hit is not None:
            _CACHE.move_to_end(key)
    if hit is None:
        with _READ_LOCK:  # one thread reads a new fit; the others wait for it instead of reading it again
            with _CACHE_LOCK:
                hit = _CACHE.get(key)
            if hit is None:
                hit = _read(path, register_methods)
                with _CACHE_LOCK:
                    _CACHE[key] = hit
                    while len(_CACHE) > _CACHE_SIZE:
                        _CACHE.popitem(last=False)
                return replace(hit)
    if register_methods:
        register(hit.priors.methods)
    return replace(hit)


def _read(path: Path, register_methods: bool) -> SavedFit:
    meta = json.loads((path / META).read_text())
    priors = Priors.from_dict(meta["priors"])
    if register_methods:
        register(priors.methods)  # a method's quantizer name must parse before the fit is queried
    with _READ_LOCK, az.rc_context(rc={"data.load": "eager"}):
        # eager: arviz loads lazily by default, which would read the file later, outside the lock, and
        # by name (after a swap, possibly another fit's file)
        idata = az.from_netcdf(str(path / POSTERIOR))
    return SavedFit(idata=idata, runs=pd.read_csv(path / RUNS), diagnostics=Diagnostics(**meta["diagnostics"]),
                    priors=priors, meta=meta, path=path)


def open_fit(path: str | Path, cached: bool = False) -> SavedFit:
    """The fit a query answers from: a directory written by ``bayes-epm fit``, or a study directory
    (its latest fit, answered with the study's current priors: a level imported since the fit is
    answered by its prior; and the study's size range). One code path for the CLI, Python and HTTP."""
    from bayes_epm.store import CONFIG, Study  # the store imports the config reader: only when needed

    path = Path(path)
    if not (path / CONFIG).is_file():
        return load_fit(path, cached=cached)
    with Study.open(path) as study:
        priors, space, fit_dir = study.priors, study.config.space.params, study.posterior_dir
    if not (fit_dir / META).is_file():
        raise NotFittedError(f"the study {str(path)!r} has no fit yet: its first fit comes after the initial "
                             "design's runs (`bayes-epm sweep run` or `sweep resume`)")
    saved = load_fit(fit_dir, register_methods=False, cached=cached)  # Study.open registered the current methods
    saved.priors = priors
    saved.space_params = tuple(space)
    return saved
