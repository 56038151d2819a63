"""Figures as PNG, drawn on matplotlib's object API (``Figure``, no pyplot state) with the Agg canvas,
so no display is needed. matplotlib is not thread-safe even so (its mathtext parser, which draws
log-axis labels, fails under concurrent use: seen in the service), so a server draws one figure at
a time under :data:`RENDER_LOCK`; arviz's diagnostics plots, which go through pyplot, take it too."""

from __future__ import annotations

import io
import threading
import warnings
from pathlib import Path

import numpy as np

RENDER_LOCK = threading.RLock()

FAMILY_STYLES = {"dense": "-", "weight-only": "-", "weights+activations": "--", "activations-only": "-.",
                 "sparse": ":", "sparse+quantized": (0, (5, 1, 1, 1))}


def _colours(names: list[str]) -> dict[str, object]:
    from matplotlib import colormaps

    cmap = colormaps["tab20"]
    return {n: "black" if n == "dense" else cmap(i % 20) for i, n in enumerate(names)}


def _figure(nrows: int, ncols: int, width: float, height: float):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def png_bytes(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def _save(fig, path: str | Path | None) -> bytes | Path:
    data = png_bytes(fig)
    if path is None:
        return data
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def plot_frontier(result: dict, path: str | Path | None = None) -> Path | bytes:
    """The frontier of :func:`bayes_epm.decisions.frontier`: left, loss against stored bytes per
    format (posterior mean and HDI band) and the best reachable loss (dashed); right, bits per
    effective parameter per format with its HDI, formats ordered by stored bits per parameter.
    Written to ``path``, or returned as PNG bytes when ``path`` is None."""
    fig, axes = _figure(1, 2, 13, 5)
    ax, bx = axes[0]
    key = result["hdi"]
    by_format: dict[str, list[tuple[float, dict]]] = {}
    for point in result["curve"]:
        for f, v in point["formats"].items():
            by_format.setdefault(f, []).append((point["memory_bytes"], v["loss"]))
    families = {r["format"]: r["family"] for r in result["formats"]}
    colours = _colours([r["format"] for r in result["formats"]])
    for f, pts in by_format.items():
        x = [p[0] for p in pts]
        colour = colours[f]
        ax.plot(x, [p[1]["mean"] for p in pts], color=colour, lw=1.3, ls=FAMILY_STYLES.get(families[f], "-"),
                label=f"{f} ({families[f]})")
        ax.fill_between(x, [p[1][key][0] for p in pts], [p[1][key][1] for p in pts], color=colour, alpha=0.12)
    env = [(p["memory_bytes"], p["envelope"]) for p in result["curve"] if p["envelope"]]
    ax.plot([e[0] for e in env], [e[1]["mean"] for e in env], color="grey", lw=3, alpha=0.6,
            label="best reachable (per draw)")
    ax.set_xscale("log")
    ax.set_xlabel("stored bytes (non-embedding weights)")
    ax.set_ylabel("predicted loss")
    ax.set_title(f"loss against memory; {result['regime']['description'].split(' (')[0]}", fontsize=9)
    ax.legend(fontsize=7, ncol=2 if len(by_format) > 8 else 1, loc="upper left", bbox_to_anchor=(0.0, -0.2),
              frameon=False)

    rows = result["formats"]
    for i, r in enumerate(rows):
        b = r["bits_per_effective_param"]
        colour = colours[r["format"]]
        bx.errorbar([i], [b["mean"]], yerr=[[b["mean"] - b[key][0]], [b[key][1] - b["mean"]]], fmt="o",
                    color=colour, mfc=colour if r["observed"] else "white", capsize=3)
    bx.set_xticks(range(len(rows)), [r["format"] for r in rows], rotation=60, ha="right", fontsize=7)
    bx.set_yscale("log")
    bx.set_ylabel(f"stored bits per effective parameter ({key.replace('hdi_', '')}% HDI)")
    bx.set_title("fewer is better; open markers: never trained (predicted)", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)  # bbox "tight": the legend sits below the axes


def plot_loss_curves(panels: list[dict], hdi_key: str, path: str | Path | None = None) -> Path | bytes:
    """Loss against N, one panel per format: the posterior mean and HDI band at each tokens-per-parameter
    ratio (``curves``: ``{ratio: (N, mean, lo, hi)}``) and the format's runs as points, coloured alike
    by their nearest ratio (``runs``: ``(N, loss, ratio)``)."""
    from matplotlib import colormaps

    n = len(panels)
    cols = min(3, n)
    rows = -(-n // cols)
    fig, axes = _figure(rows, cols, 4.6 * cols, 3.6 * rows)
    ratios = sorted({r for p in panels for r in p["curves"]})
    cmap = colormaps["viridis"]
    colour = {r: cmap(i / max(1, len(ratios) - 1) * 0.85) for i, r in enumerate(ratios)}
    for ax, panel in zip(axes.ravel(), panels):
        for ratio, (grid, mean, lo, hi) in panel["curves"].items():
            ax.plot(grid, mean, color=colour[ratio], lw=1.3, label=f"D = {ratio:g} N")
            ax.fill_between(grid, lo, hi, color=colour[ratio], alpha=0.18)
        for params, loss, ratio in panel["runs"]:
            ax.plot(params, loss, "o", ms=4, color=colour.get(ratio, "black"), mec="black", mew=0.5)
        ax.set_xscale("log")
        ax.set_title(f"{panel['format']} ({panel['source']}, {len(panel['runs'])} runs)", fontsize=9)
        ax.set_xlabel("parameters N")
        ax.set_ylabel("loss")
        ax.legend(fontsize=7)
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    fig.suptitle(f"loss against N: posterior mean and {hdi_key.replace('hdi_', '')}% band; points are runs",
                 fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def plot_epms(rows: list[dict], hdi_key: str, path: str | Path | None = None) -> Path | bytes:
    """The EPM of every format with its HDI: filled markers observed (runs of that format), open
    predicted (from the hierarchy or a prior); targets in bold."""
    fig, axes = _figure(1, 1, 7.5, 0.8 + 0.32 * len(rows))
    ax = axes[0, 0]
    for i, r in enumerate(rows):
        lo, hi = r[hdi_key]
        colour = "tab:blue" if r["observed"] else "tab:orange"
        ax.errorbar([r["mean"]], [i], xerr=[[r["mean"] - lo], [hi - r["mean"]]], fmt="o", color=colour,
                    mfc=colour if r["observed"] else "white", capsize=3)
    ax.set_yticks(range(len(rows)), [r["format"] + (" (target)" if r.get("target") else "") for r in rows],
                  fontsize=8)
    for label, r in zip(ax.get_yticklabels(), rows):
        if r.get("target"):
            label.set_fontweight("bold")
    ax.axvline(1.0, color="grey", lw=0.8, ls=":")
    ax.invert_yaxis()
    ax.set_xlabel(f"EPM (mean, {hdi_key.replace('hdi_', '')}% HDI); filled: observed, open: predicted")
    fig.tight_layout()
    return _save(fig, path)


def plot_run_order(runs, budget: float, path: str | Path | None = None) -> Path | bytes:
    """The order in which the sweep chose its runs: each run's size against its order (colour: format;
    marker: status; label: iteration), and the FLOPs spent against the budget."""
    fig, axes = _figure(1, 2, 13, 4.2)
    ax, bx = axes[0]
    formats = list(dict.fromkeys(runs["format"]))
    colours = _colours(formats)
    markers = {"done": "o", "failed": "X", "diverged": "D", "proposed": "s", "running": "^"}
    order = np.arange(1, len(runs) + 1)
    for fmt in formats:
        for status, marker in markers.items():
            sel = ((runs["format"] == fmt) & (runs["status"] == status)).to_numpy()
            if sel.any():
                ax.scatter(order[sel], runs["params"].to_numpy()[sel], marker=marker, color=colours[fmt],
                           s=18 + 40 * np.log10(runs["tokens"].to_numpy()[sel] / runs["params"].to_numpy()[sel]).clip(0),
                           edgecolors="black", linewidths=0.4,
                           label=f"{fmt}" if status == "done" else f"{fmt} ({status})")
    for it, first in runs.assign(order=order).groupby("iteration")["order"].min().items():
        ax.axvline(first - 0.5, color="grey", lw=0.5, ls=":")
        ax.text(first - 0.4, ax.get_ylim()[1] if len(runs) else 1, f"it {it}", fontsize=6, va="top")
    ax.set_yscale("log")
    ax.set_xlabel("run (in the order proposed)")
    ax.set_ylabel("parameters N (marker size: tokens per parameter)")
    ax.legend(fontsize=7, ncol=2)
    done = runs["flops"].fillna(0.0).to_numpy()
    spent = np.cumsum(done)
    bx.step(order, spent, where="post", color="black", label="spent")
    bx.axhline(budget, color="tab:red", ls="--", lw=1, label=f"budget {budget:.3g}")
    if spent.size and spent[-1] > 0:
        bx.set_yscale("log")  # a sweep spends a sliver of a generous budget: both must show
    bx.set_xlabel("run (in the order proposed)")
    bx.set_ylabel("FLOPs spent (cumulative)")
    bx.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def plot_diagnostics(idata, var_names: list[str], kind: str, path: str | Path | None = None) -> Path | bytes:
    """arviz's rank plots (``kind="rank"``: near-uniform histograms mean the chains mix) or trace plots
    (``"trace"``) of ``var_names``."""
    import arviz as az
    from matplotlib import pyplot as plt

    with RENDER_LOCK, warnings.catch_warnings():
        # arviz 0.23's trace plot calls a matplotlib helper that matplotlib 3.11 deprecates: arviz's to fix
        warnings.filterwarnings("ignore", message="Passing a dict or None as alias_mapping",
                                category=DeprecationWarning)
        if kind == "rank":
            axes = az.plot_rank(idata, var_names=var_names, kind="bars", show=False)
        else:
            axes = az.plot_trace(idata, var_names=var_names, compact=True, show=False)
        fig = np.atleast_1d(axes).ravel()[0].get_figure()
        try:
            fig.tight_layout()
            return _save(fig, path)
        finally:
            plt.close(fig)
