"""A study's report: PNG figures and one HTML page (``bayes-epm report STUDY``), and the same page
served live as the dashboard (``GET /studies/{id}/report``), which refreshes while the sweep runs.

Figures (:data:`PLOTS`): loss against N for each format with posterior bands and the runs as
points; the EPM of every format with its HDI (observed and predicted marked); the order in which
the sweep chose its runs; the sampler's rank and trace plots (arviz); the loss-vs-memory frontier
(:func:`bayes_epm.decisions.frontier`). The page carries the numbers as tables too: the study's
counts and budget, the fit's diagnostics (never hidden: a fit that missed one says which), the EPM
table and the runs.
"""

from __future__ import annotations

import html
import threading
import time
from collections import OrderedDict
from pathlib import Path
from urllib.parse import quote

import numpy as np

from bayes_epm.errors import NotFittedError

PLOTS = ("loss", "epm", "order", "rank", "trace", "frontier")
FIT_PLOTS = {"loss", "epm", "rank", "trace", "frontier"}
TITLES = {"loss": "Loss against N, by format", "epm": "EPM of every format",
          "order": "The order the sweep chose its runs in", "rank": "Sampler diagnostics: rank plots",
          "trace": "Sampler diagnostics: traces", "frontier": "Loss against memory (the decisions frontier)"}
ACTIVE_S = 300.0  # a study whose runs changed this recently counts as a running sweep: the page refreshes
HDI = 0.9
_CACHE: "OrderedDict[tuple, bytes]" = OrderedDict()
_CACHE_LOCK = threading.Lock()
_CACHE_SIZE = 64


class _State:
    """What a report shows, read once: the study, its runs and its fit (None before the first)."""

    def __init__(self, study_dir: Path) -> None:
        from bayes_epm.posterior_store import open_fit
        from bayes_epm.store import Study

        with Study.open(study_dir) as st:
            self.config = st.config
            self.runs = st.runs().drop(columns=["spec", "result"])
            self.counts = st.counts()
            self.flops_spent = st.flops_spent()
            self.last_update = st.last_update()
        try:
            self.fit = open_fit(study_dir, cached=True)
        except NotFittedError:
            self.fit = None
        # the fit's key is the directory it was read from (a version: never rewritten in place)
        version = f"{self.fit.path}:{self.fit.meta.get('settings')}" if self.fit is not None else ""
        self.key = (str(Path(study_dir).resolve()), self.last_update, version)

    # -- the numbers ------------------------------------------------------------------------------------
    def formats(self) -> list[str]:
        """Dense, the space's formats, and any other fitted format, in that order."""
        names = list(self.config.space.formats)
        if self.fit is not None and "fmt" in self.fit.idata.posterior.coords:
            names += [str(f) for f in self.fit.idata.posterior.coords["fmt"].values]
        return list(dict.fromkeys(["dense", *names]))

    def epm_rows(self) -> list[dict]:
        from bayes_epm.queries import epm

        targets = set(self.config.space.targets)
        rows = []
        for f in self.formats():
            if f == "dense":
                continue
            r = epm(self.fit.idata, f, HDI, self.fit.priors)
            r["target"] = f in targets
            r["runs"] = int(((self.runs["format"] == f) & (self.runs["status"] == "done")).sum())
            rows.append(r)
        return rows

    def loss_panels(self) -> list[dict]:
        from bayes_epm.law import log_loss
        from bayes_epm.queries import epm_draws_joint, epm_source, summarize

        post = self.fit.idata.posterior
        law = {k: post[k].values.reshape(-1) for k in ("A", "B", "E", "alpha", "beta")}
        formats = self.formats()
        draws = epm_draws_joint(self.fit.idata, formats, self.fit.priors)
        lo, hi = self.config.space.params
        grid = np.geomspace(lo, hi, 30)
        done = self.runs[self.runs["status"] == "done"]
        ratios = sorted(self.config.space.tokens_per_param)
        panels = []
        for f in formats:
            rho = draws[f][0]
            curves = {}
            for ratio in ratios:
                log_l = log_loss(np.log(grid)[None, :], np.log(ratio * grid)[None, :], np.log(rho)[:, None],
                                 np.log(law["A"])[:, None], np.log(law["B"])[:, None], np.log(law["E"])[:, None],
                                 law["alpha"][:, None], law["beta"][:, None])
                loss = np.exp(log_l)
                bands = [summarize(loss[:, j], HDI) for j in range(len(grid))]
                curves[ratio] = (grid, [b.mean for b in bands], [b.lo for b in bands], [b.hi for b in bands])
            mine = done[done["format"] == f]
            points = [(r.params, r.loss, min(ratios, key=lambda q: abs(np.log(r.tokens / r.params / q))))
                      for r in mine.itertuples()]
            panels.append({"format": f, "curves": curves, "runs": points,
                           "source": epm_source(self.fit.idata, f, self.fit.priors)})
        return panels

    def diagnostic_vars(self) -> list[str]:
        post = self.fit.idata.posterior
        return [v for v in ("alpha", "beta", "e", "a_c", "b_c", "sigma", "nu", "tau") if v in post]


def render_plot(study_dir: str | Path, name: str, state: _State | None = None) -> bytes:
    """One figure of the report as PNG bytes (cached while the study and its fit are unchanged)."""
    from bayes_epm import plots

    if name not in PLOTS:
        raise ValueError(f"no plot {name!r}; valid: {', '.join(PLOTS)}")
    state = state or _State(Path(study_dir))
    if name in FIT_PLOTS and state.fit is None:
        raise NotFittedError(f"the study {str(study_dir)!r} has no fit yet: no {name} plot")
    key = (*state.key, name)
    with _CACHE_LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    if name == "loss":
        panels = state.loss_panels()
        with plots.RENDER_LOCK:
            data = plots.plot_loss_curves(panels, "hdi_90")
    elif name == "epm":
        rows = state.epm_rows()
        with plots.RENDER_LOCK:
            data = plots.plot_epms(rows, "hdi_90")
    elif name == "order":
        with plots.RENDER_LOCK:
            data = plots.plot_run_order(state.runs, state.config.budget.flops)
    elif name in ("rank", "trace"):
        data = plots.plot_diagnostics(state.fit.idata, state.diagnostic_vars(), name)
    else:
        from bayes_epm.decisions import frontier

        result = frontier(state.fit, points=16)
        with plots.RENDER_LOCK:
            data = plots.plot_frontier(result)
    with _CACHE_LOCK:
        _CACHE[key] = data
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return data


# ------------------------------------------------------------------------------------------ the page

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; max-width: 1400px; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f3f3f3; } td.l, th.l { text-align: left; }
.bad { color: #b00; font-weight: bold; } .ok { color: #070; }
img { max-width: 100%; border: 1px solid #eee; margin-bottom: 1em; }
.note { color: #555; font-size: 0.9em; }
"""


def _fmt(v, spec: str = ".4g") -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return ""
    return format(v, spec) if isinstance(v, (int, float, np.floating, np.integer)) else html.escape(str(v))


def _table(table_id: str, header: list[str], rows: list[list[str]], left: int = 1) -> str:
    head = "".join(f'<th class="{"l" if i < left else ""}">{html.escape(h)}</th>' for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(f'<td class="{"l" if i < left else ""}">{c}</td>' for i, c in enumerate(r))
                   + "</tr>" for r in rows)
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def page(state: _State, title: str, images: dict[str, str], refresh: int = 0) -> str:
    """The HTML page: ``images`` maps each plot name to its ``src`` (a file name or a URL)."""
    cfg, counts = state.config, state.counts
    parts = [f"<h1>{html.escape(title)}</h1>"]
    updated = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(state.last_update)) if state.last_update else "never"
    parts.append(f'<p id="summary">Runs: {", ".join(f"{v} {k}" for k, v in counts.items())}. FLOPs spent '
                 f"{state.flops_spent:.3g} of {cfg.budget.flops:.3g} ({state.flops_spent / cfg.budget.flops:.1%}). "
                 f"Targets: {html.escape(', '.join(cfg.space.targets))}, 90% HDI narrower than {cfg.budget.hdi_width:g}. "
                 f"Last change to a run: {updated}.</p>")
    if refresh:
        parts.append(f'<p class="note">This page refreshes every {refresh} s while the sweep runs.</p>')
    if state.fit is None:
        parts.append('<p id="diagnostics" class="bad">No fit yet: the first fit comes after the initial design\'s '
                     "runs.</p>")
    else:
        d = state.fit.diagnostics
        verdict = ('<span class="ok">converged</span>' if d.converged
                   else f'<span class="bad">NOT CONVERGED: {html.escape("; ".join(d.problems()))}</span>')
        parts.append(f'<p id="diagnostics">Latest fit: max r-hat {d.r_hat_max:.3f}, min bulk ESS {d.ess_bulk_min:.0f}, '
                     f"min tail ESS {d.ess_tail_min:.0f}, {d.divergences} divergences, {d.chains} chains x {d.draws} "
                     f"draws: {verdict}.</p>")
        rows = []
        for r in state.epm_rows():
            lo, hi = r["hdi_90"]
            rows.append([html.escape(r["format"]) + (" <b>(target)</b>" if r["target"] else ""), _fmt(r["mean"], ".3f"),
                         f"[{lo:.3f}, {hi:.3f}]", _fmt(hi - lo, ".3f"), _fmt(r["sd"], ".3f"),
                         "observed" if r["observed"] else "predicted", html.escape(r["source"]), str(r["runs"])])
        parts.append("<h2>EPM</h2>" + _table("epm-table", ["format", "mean", "90% HDI", "width", "sd", "", "source",
                                                             "runs"], rows))
    for name in PLOTS:
        if name in images:
            parts.append(f'<h2>{TITLES[name]}</h2><img id="plot-{name}" alt="{name}" src="{html.escape(images[name])}" '
                         'onload="this.dataset.rendered = this.naturalWidth > 0" '
                         'onerror="this.dataset.rendered = false">')
    runs = state.runs
    rows = [[str(r.id), html.escape(r.status), html.escape(r.format), _fmt(r.params, ".3g"), _fmt(r.tokens, ".3g"),
             _fmt(r.loss, ".4f"), _fmt(r.flops, ".3g"), str(r.iteration), html.escape(r.source), html.escape(r.error)]
            for r in runs.itertuples()]
    parts.append("<h2>Runs</h2>" + _table("runs-table", ["id", "status", "format", "params", "tokens", "loss", "FLOPs",
                                                          "iteration", "source", "error"], rows, left=3))
    meta = f'<meta http-equiv="refresh" content="{refresh}">' if refresh else ""
    return (f"<!doctype html><html><head><meta charset=\"utf-8\">{meta}<title>{html.escape(title)}</title>"
            f"<style>{_STYLE}</style></head><body>{''.join(parts)}</body></html>")


def _plots_for(state: _State) -> list[str]:
    return [n for n in PLOTS if state.fit is not None or n not in FIT_PLOTS]


def write_report(study_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write every figure as PNG and ``report.html`` beside them (default ``STUDY/report/``)."""
    study_dir = Path(study_dir)
    out = Path(out) if out is not None else study_dir / "report"
    state = _State(study_dir)
    out.mkdir(parents=True, exist_ok=True)
    images = {}
    for name in _plots_for(state):
        (out / f"{name}.png").write_bytes(render_plot(study_dir, name, state))
        images[name] = f"{name}.png"
    path = out / "report.html"
    tmp = out / ".report.html.tmp"
    tmp.write_text(page(state, f"bayes-epm study {study_dir.name}", images))
    tmp.replace(path)
    return path


def dashboard(study_dir: str | Path, study_id: str, refresh: int = 15, token: str | None = None) -> str:
    """The live page of the service: figures linked to ``plots/<name>.png``; refreshing every
    ``refresh`` seconds while the sweep runs (runs proposed or running, or changed in the last 5 minutes)."""
    state = _State(Path(study_dir))
    active = state.counts.get("proposed", 0) + state.counts.get("running", 0) > 0 or (
        state.last_update is not None and time.time() - state.last_update < ACTIVE_S)
    suffix = f"?token={quote(token)}" if token else ""
    images = {name: f"plots/{name}.png{suffix}" for name in _plots_for(state)}
    return page(state, f"bayes-epm study {study_id}", images, refresh=refresh if active else 0)
