"""Figures, written as PNG with matplotlib's Agg backend (no display needed)."""

from __future__ import annotations

from pathlib import Path

FAMILY_STYLES = {"dense": "-", "weight-only": "-", "weights+activations": "--", "activations-only": "-.",
                 "sparse": ":", "sparse+quantized": (0, (5, 1, 1, 1))}


def _colours(names: list[str]) -> dict[str, object]:
    from matplotlib import colormaps

    cmap = colormaps["tab20"]
    return {n: "black" if n == "dense" else cmap(i % 20) for i, n in enumerate(names)}


def _figure(ncols: int, width: float, height: float):
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib import pyplot as plt

    return plt, *plt.subplots(1, ncols, figsize=(width, height), squeeze=False)


def plot_frontier(result: dict, path: str | Path) -> Path:
    """The frontier of :func:`bayes_epm.decisions.frontier`: left, loss against stored bytes per
    format (posterior mean and HDI band) and the best reachable loss (dashed); right, bits per
    effective parameter per format with its HDI, formats ordered by stored bits per parameter."""
    plt, fig, axes = _figure(2, 13, 5)
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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")  # the legend sits below the axes
    plt.close(fig)
    return path
