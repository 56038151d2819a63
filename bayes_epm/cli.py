"""The ``bayes-epm`` command line.

Exit status: 0 success; 1 a run that failed (or an unexpected error); 2 bad input (one line on stderr saying what was wrong
and what is valid; nothing was started or written); 3 a training run that diverged.
"""

from __future__ import annotations

import json
import os
import re
import sys
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from bayes_epm.errors import InvalidInputError, SpecError

try:  # typer >= 0.20 ships its own copy of click; older releases use click itself
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover - depends on the installed typer
    from click import exceptions as click_exceptions

EXIT_FAILED, EXIT_BAD_INPUT, EXIT_DIVERGED = 1, 2, 3

app = typer.Typer(
    name="bayes-epm",
    help="Bayesian scaling laws for compressed language models: the effective parameter multiplier (EPM) "
         "of every compression format, with honest uncertainty.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _format_from_options(fmt: str | None, sparsity: float | None, pattern: str | None,
                         w_bits: int | None, a_bits: int | None, quantizer: str | None) -> str:
    from bayes_epm.models.formats import FULL_BITS, Format

    parts = {"--sparsity": sparsity, "--pattern": pattern, "--w-bits": w_bits, "--a-bits": a_bits,
             "--quantizer": quantizer}
    given = [k for k, v in parts.items() if v is not None]
    if fmt is not None and given:
        raise SpecError(f"give either --format or {', '.join(given)}, not both")
    if fmt is not None:
        return Format.parse(fmt).name
    return Format(sparsity=sparsity or 0.0, pattern=pattern or "unstructured",
                  w_bits=FULL_BITS if w_bits is None else w_bits,
                  a_bits=FULL_BITS if a_bits is None else a_bits,
                  quantizer=quantizer or "rms").name


def _summary_table(result: dict[str, Any]) -> Table:
    table = Table(title=f"run {result['status']}", show_header=False, title_justify="left")
    rows = [
        ("format", result["format"]), ("held-out loss", f"{result['loss']:.4f} nats/token"),
        ("params (non-embedding)", f"{result['params']:,} ({result['n_layer']} layers x {result['d_model']} wide, "
                                   f"{result['n_head']} heads)"),
        ("tokens", f"{result['tokens']:,} in {result['steps']} steps"), ("training FLOPs", f"{result['flops']:.3g}"),
        ("sparsity achieved", f"{result['sparsity_achieved']:.4f}"), ("device", result["device"]),
        ("throughput", f"{result['tokens_per_s']:,.0f} tokens/s"), ("wall time", f"{result['wall_s']:.1f} s"),
        ("peak lr", f"{result['lr']:.3g}"), ("data", f"{result['data_source']} (sha256 {result['data_sha256'][:12]})"),
    ]
    if result["error"]:
        rows.append(("error", result["error"]))
    for key, value in rows:
        table.add_row(key, str(value))
    return table


@app.command()
def train(
    params: Annotated[float, typer.Option(help="Non-embedding parameter count N, e.g. 2e4.")],
    tokens: Annotated[float, typer.Option(help="Training tokens D, e.g. 2e5.")],
    format: Annotated[Optional[str], typer.Option("--format", "-f", help="Compression format, e.g. dense, s0.5, 2:4, w4, w4a4, s0.75-w4a8, 2:4-w4:absmax.")] = None,
    sparsity: Annotated[Optional[float], typer.Option(help="Instead of --format: fraction of weights pruned.")] = None,
    pattern: Annotated[Optional[str], typer.Option(help="Instead of --format: 'unstructured' or '<n>:<m>'.")] = None,
    w_bits: Annotated[Optional[int], typer.Option(help="Instead of --format: weight bits (1-8, 16 = none).")] = None,
    a_bits: Annotated[Optional[int], typer.Option(help="Instead of --format: activation bits (1-8, 16 = none).")] = None,
    quantizer: Annotated[Optional[str], typer.Option(help="Instead of --format: quantizer name (rms, absmax).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the initialisation and data order.")] = 0,
    batch_size: Annotated[int, typer.Option(help="Sequences per step.")] = 16,
    context: Annotated[int, typer.Option(help="Tokens per sequence.")] = 128,
    lr: Annotated[Optional[float], typer.Option(help="Peak learning rate (default: the width rule).")] = None,
    data: Annotated[str, typer.Option(help="'builtin', a text file, or a uint16 (.bin/.u16) / uint32 (.u32) token file.")] = "builtin",
    data_dtype: Annotated[str, typer.Option(help="auto, text, uint16 or uint32.")] = "auto",
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    eval_tokens: Annotated[int, typer.Option(help="Size of the held-out set for the final loss.")] = 65_536,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object and nothing else.")] = False,
) -> int:
    """Train one small transformer in a compression format and report its held-out loss."""
    from bayes_epm.workers.spec import TrainSpec
    from bayes_epm.workers.train import prepare
    from bayes_epm.workers.train import train as train_run

    fmt = _format_from_options(format, sparsity, pattern, w_bits, a_bits, quantizer)
    spec = TrainSpec(params=params, tokens=tokens, format=fmt, seed=seed, batch_size=batch_size,
                     context=context, lr=lr, data=data, data_dtype=data_dtype, device=device,
                     eval_tokens=eval_tokens)
    run = prepare(spec)  # every input check, before anything is printed or trained
    if as_json:
        result = train_run(run).to_dict()
        _print_json(result)
    else:
        console = Console()
        columns = (TextColumn(f"[bold]{spec.format}[/] N={spec.params:.3g} D={spec.tokens:.3g}"), BarColumn(),
                   MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn(),
                   TimeRemainingColumn())
        with Progress(*columns, console=console, transient=False) as bar:
            task = bar.add_task("train", total=spec.steps, loss="-")
            result = train_run(run, lambda done, total, loss: bar.update(task, completed=done, loss=f"{loss:.3f}"))
            result = result.to_dict()
        console.print(_summary_table(result))
    return {"ok": 0, "failed": EXIT_FAILED, "diverged": EXIT_DIVERGED}[result["status"]]


def _load_runs_arg(runs: str, source: str | None = None):
    """A run-table path, or ``published:NAME`` for a shipped table; ``source`` labels rows without one."""
    from bayes_epm.published import load_published
    from bayes_epm.runs import load_runs

    if runs.startswith("published:"):
        table, skipped = load_published(runs.split(":", 1)[1])
        for _, row in skipped.iterrows():
            print(f"bayes-epm: skipped a run of {runs}: {row['reason']}", file=sys.stderr)
        return table
    return load_runs(runs, source)


def _print_json(obj: Any) -> None:
    from bayes_epm.queries import json_safe  # imports arviz: only when printing JSON

    print(json.dumps(json_safe(obj)))


def _interval_text(d: dict) -> str:
    key = next(k for k in d if k.startswith("hdi_"))
    lo, hi = d[key]
    return f"{d['mean']:.4g} (sd {d['sd']:.2g}, {key.replace('hdi_', '')}% HDI {lo:.4g} - {hi:.4g})"


@app.command()
def fit(
    runs: Annotated[str, typer.Argument(help="Run table (CSV/Parquet), or published:chinchilla|sparse_t5|quest.")],
    out: Annotated[str, typer.Option(help="Directory for the posterior (posterior.nc, runs.csv, fit.json).")] = "fit",
    draws: Annotated[int, typer.Option(help="Draws per chain after tuning.")] = 1000,
    tune: Annotated[int, typer.Option(help="Tuning steps per chain.")] = 1000,
    chains: Annotated[int, typer.Option(help="Chains (run in parallel up to the number of CPUs).")] = 4,
    seed: Annotated[int, typer.Option(help="Sampler seed.")] = 0,
    dense_mass: Annotated[bool, typer.Option(help="Adapt a full mass matrix (helps linear ridges, hurts curved ones).")] = False,
    priors_file: Annotated[Optional[str], typer.Option("--priors", help="A prior file (README) for new methods.")] = None,
    literature: Annotated[bool, typer.Option(help="Use the shipped literature EPMs as priors (`bayes-epm priors "
                                                  "list` shows them); off for tables they came from.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object and nothing else.")] = False,
) -> int:
    """Fit the hierarchical scaling law to a run table: the law and the EPM of every format."""
    for name, value in (("draws", draws), ("tune", tune), ("chains", chains)):
        if value < 1:
            raise SpecError(f"--{name}={value} is not valid; it must be a positive integer")
    from bayes_epm.priors import PriorSet, load_prior_file, register

    prior_set = load_prior_file(priors_file, literature) if priors_file else PriorSet(literature=literature)
    register(prior_set)  # before the table: its formats may name a method of the prior file
    table = _load_runs_arg(runs)
    from bayes_epm.inference import fit as run_fit
    from bayes_epm.model import Priors
    from bayes_epm.posterior_store import save_fit
    from bayes_epm.queries import epm, law_summary

    priors = Priors(methods=prior_set)
    what = f"sampling {chains} chains x ({tune} tune + {draws} draws) on {len(table)} runs"
    with Console(stderr=True, quiet=as_json).status(what):  # a spinner while the chains run
        idata, diag = run_fit(table, draws=draws, tune=tune, chains=chains, seed=seed, priors=priors,
                              dense_mass=dense_mass)
    path = save_fit(out, idata, table, diag, priors, {"draws": draws, "tune": tune, "chains": chains, "seed": seed,
                                                      "dense_mass": dense_mass})
    formats = sorted(f for f in table["format"].unique() if f != "dense")
    result = {"law": law_summary(idata), "epm": {f: {k: v for k, v in epm(idata, f, priors=priors).items() if k != "format"}
                                                 for f in formats},
              "diagnostics": diag.to_dict(), "posterior": str(path)}
    if as_json:
        _print_json(result)
    else:
        console = Console()
        table_out = Table(title=f"{len(table)} runs, {len(formats)} compressed formats", title_justify="left")
        table_out.add_column("quantity")
        table_out.add_column("posterior (mean, sd, 90% HDI)")
        for k, v in result["law"].items():
            table_out.add_row(k, _interval_text(v))
        for f, v in result["epm"].items():
            table_out.add_row(f"EPM {f}", _interval_text(v))
        console.print(table_out)
        verdict = "converged" if diag.converged else "NOT CONVERGED: " + "; ".join(diag.problems())
        console.print(f"diagnostics: max r-hat {diag.r_hat_max:.3f}, min bulk ESS {diag.ess_bulk_min:.0f}, "
                      f"divergences {diag.divergences}, {diag.chains} chains x {diag.draws} draws, "
                      f"{diag.sampling_s:.1f} s: [{'green' if diag.converged else 'bold red'}]{verdict}[/]")
        console.print(f"posterior saved to {path}")
    if not diag.converged:
        print(f"bayes-epm: warning: the fit did not converge ({'; '.join(diag.problems())}); "
              "its numbers are not to be trusted", file=sys.stderr)
    return 0 if diag.converged else EXIT_FAILED


def _answer(posterior: str, query, text, as_json: bool) -> int:
    """Load a saved fit (or a study's latest), run one query on it, print the result as JSON or as text."""
    from bayes_epm.posterior_store import open_fit

    saved = open_fit(posterior)
    result = query(saved)
    if as_json:
        _print_json(result)
    else:
        print(text(result))
    return 0


@app.command("epm")
def epm_cmd(
    posterior: Annotated[str, typer.Argument(help="Directory written by `bayes-epm fit`, or a study directory.")],
    format: Annotated[str, typer.Option("--format", "-f", help="Any format, trained or not.")],
    hdi: Annotated[float, typer.Option(help="HDI probability.")] = 0.9,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> int:
    """Posterior EPM of a format (predicted from its factors when it was never trained)."""
    from bayes_epm.queries import epm

    def text(r: dict) -> str:
        kind = {"posterior": "observed", "hierarchy": "predicted from its factors (never trained)",
                "prior": "from its prior (no run of its levels yet)"}[r["source"]]
        return f"EPM of {r['format']}: {_interval_text(r)}; {kind}"

    return _answer(posterior, lambda saved: epm(saved.idata, format, hdi, saved.priors), text, as_json)


@app.command()
def compare(
    posterior: Annotated[str, typer.Argument(help="Directory written by `bayes-epm fit`, or a study directory.")],
    a: Annotated[str, typer.Argument(help="First format.")],
    b: Annotated[str, typer.Argument(help="Second format.")],
    hdi: Annotated[float, typer.Option(help="HDI probability.")] = 0.9,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> int:
    """Probability that format A's EPM exceeds format B's, and the HDI of the difference."""
    from bayes_epm.queries import compare as run_compare

    return _answer(posterior, lambda saved: run_compare(saved.idata, a, b, hdi, saved.priors),
                   lambda r: f"P(EPM {r['a']} > EPM {r['b']}) = {r['p_a_greater']:.3f}; "
                             f"difference {_interval_text(r['difference'])}", as_json)


@app.command()
def predict(
    posterior: Annotated[str, typer.Argument(help="Directory written by `bayes-epm fit`, or a study directory.")],
    params: Annotated[float, typer.Option(help="Parameter count N.")],
    tokens: Annotated[float, typer.Option(help="Training tokens D.")],
    format: Annotated[str, typer.Option("--format", "-f", help="Format.")] = "dense",
    hdi: Annotated[float, typer.Option(help="HDI probability.")] = 0.9,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> int:
    """Predicted loss of a run, with its HDI."""
    from bayes_epm.queries import predict as run_predict

    return _answer(posterior, lambda saved: run_predict(saved.idata, params, tokens, format, hdi, saved.priors),
                   lambda r: f"loss of {r['format']} at N={params:.3g}, D={tokens:.3g}: "
                             f"{_interval_text(r['loss'])}", as_json)


def _formats_arg(formats: list[str] | None) -> list[str] | None:
    """``--formats a,b --formats c`` -> ``[a, b, c]``; None when not given."""
    if not formats:
        return None
    out = [f.strip() for item in formats for f in item.split(",") if f.strip()]
    if not out:
        raise InvalidInputError("--formats is empty; give format names, comma-separated (e.g. w4,w4a4,s0.5)")
    return out


def _regime_options(train_flops: float | None, tokens: float | None, tokens_per_param: float | None) -> dict:
    given = [n for n, v in (("--train-flops", train_flops), ("--tokens", tokens),
                            ("--tokens-per-param", tokens_per_param)) if v is not None]
    if len(given) > 1:
        raise InvalidInputError(f"give at most one of --train-flops, --tokens and --tokens-per-param, not {' and '.join(given)}")
    return {"train_flops": train_flops, "tokens": tokens, "tokens_per_param": tokens_per_param}


def _diagnostics_warning(result: dict) -> None:
    diag = result["diagnostics"]
    if not diag["converged"]:
        print(f"bayes-epm: warning: the fit did not converge ({'; '.join(diag['problems'])}); "
              "these odds are not to be trusted", file=sys.stderr)


# options shared by `recommend` and `frontier`
TrainFlopsOpt = Annotated[Optional[float], typer.Option(
    help="Training compute C: per posterior draw the loss-minimising size (D = C / 6N), capped by the memory.")]
TokensOpt = Annotated[Optional[float], typer.Option(
    help="Train every candidate on D tokens, at the largest size the memory stores.")]
TokensPerParamOpt = Annotated[Optional[float], typer.Option(
    help="Train every candidate on R tokens per parameter, at the largest size the memory stores.")]
FormatsOpt = Annotated[Optional[list[str]], typer.Option(
    "--formats", help="Candidate formats, comma-separated or repeated, trained or not (default: dense and every "
                      "fitted format).")]
MinParamsOpt = Annotated[Optional[float], typer.Option(
    help="Smallest size considered (default: the study's smallest size, or the fit's smallest run).")]


@app.command()
def recommend(
    study: Annotated[str, typer.Argument(help="Study directory, or a directory written by `bayes-epm fit`.")],
    memory_bytes: Annotated[str, typer.Option("--memory-bytes", help="Memory for the stored weights: bytes, or with "
                                              "a unit (512MB, 4GiB).")],
    train_flops: TrainFlopsOpt = None,
    tokens: TokensOpt = None,
    tokens_per_param: TokensPerParamOpt = None,
    formats: FormatsOpt = None,
    min_params: MinParamsOpt = None,
    hdi: Annotated[float, typer.Option(help="HDI probability.")] = 0.9,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object and nothing else.")] = False,
) -> int:
    """Which format and size give the lowest loss within a memory budget, with the probability that each is best.

    Without --train-flops, --tokens or --tokens-per-param every candidate is compared at unlimited tokens (the capacity
    limit E + A (N EPM)^-alpha). Stored bits per parameter count the weights, quantization scales and sparsity
    metadata (README, "Decisions")."""
    from bayes_epm.decisions import recommend as run_recommend

    regime = _regime_options(train_flops, tokens, tokens_per_param)
    fmts = _formats_arg(formats)

    def text(r: dict) -> str:
        b = r["budget"]
        key = next(k for k in r["recommendations"][0] if k.startswith("params_hdi"))
        table = Table(title=f"{b['memory_bytes']:.4g} bytes, {b['regime']}; {r['n_draws']} posterior draws",
                      title_justify="left")
        for col in ("rank", "format", "params", "tokens", "bits/param", f"loss (mean, {key[11:]}% HDI)", "P(best)",
                    "notes"):
            table.add_column(col)
        for i, x in enumerate(r["recommendations"], 1):
            lo, hi = x["loss"][f"hdi_{key[11:]}"]
            params = f"{x['params']:.3g}"
            if x[key][0] != x[key][1]:
                params += f" [{x[key][0]:.3g}, {x[key][1]:.3g}]"
            notes = [] if x["source"] == "posterior" else [f"EPM from the {x['source']} (never trained)"]
            if b["train_flops"] is not None:
                notes.append(f"memory binds in {x['memory_bound']:.0%} of draws")
            if x["extrapolated"]:
                notes.append("outside the fitted sizes")
            table.add_row(str(i), x["format"], params, "unlimited" if x["tokens"] is None else f"{x['tokens']:.3g}",
                          f"{x['bits_per_param']:.3f}", f"{x['loss']['mean']:.4f} [{lo:.4f}, {hi:.4f}]",
                          f"{x['p_best']:.3f} ± {x['p_best_mcse']:.3f}", "; ".join(notes))
        console = Console(width=160)
        with console.capture() as cap:
            console.print(table)
            for e in r["excluded"]:
                console.print(f"does not fit: {e['format']}: {e['reason']}")
        return cap.get().rstrip()

    def query(saved) -> dict:
        result = run_recommend(saved, memory_bytes, formats=fmts, min_params=min_params, hdi=hdi, **regime)
        _diagnostics_warning(result)
        return result

    return _answer(study, query, text, as_json)


@app.command()
def frontier(
    study: Annotated[str, typer.Argument(help="Study directory, or a directory written by `bayes-epm fit`.")],
    train_flops: TrainFlopsOpt = None,
    tokens: TokensOpt = None,
    tokens_per_param: TokensPerParamOpt = None,
    formats: FormatsOpt = None,
    min_bytes: Annotated[Optional[str], typer.Option(help="Smallest memory budget of the curve (default: the smallest "
                                                     "model in the cheapest format).")] = None,
    max_bytes: Annotated[Optional[str], typer.Option(help="Largest memory budget of the curve (default: the largest "
                                                     "fitted run, dense).")] = None,
    points: Annotated[int, typer.Option(help="Memory budgets on the curve (log-spaced).")] = 24,
    min_params: MinParamsOpt = None,
    plot: Annotated[Optional[str], typer.Option(help="Also write the frontier as a PNG to this path.")] = None,
    hdi: Annotated[float, typer.Option(help="HDI probability.")] = 0.9,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object and nothing else.")] = False,
) -> int:
    """Loss against stored bytes across formats: bits per effective parameter, who wins where, and where fewer bits
    stop paying."""
    from bayes_epm.decisions import frontier as run_frontier

    regime = _regime_options(train_flops, tokens, tokens_per_param)
    fmts = _formats_arg(formats)

    def text(r: dict) -> str:
        key = r["hdi"]
        table = Table(title=f"{r['regime']['description']}; bits per parameter at {r['reference_params']:.3g} "
                            f"parameters (the largest run)", title_justify="left")
        for col in ("format", "family", "bits/param", f"EPM (mean, {key[4:]}% HDI)",
                    f"bits per effective param ({key[4:]}% HDI)", "P(fewest)"):
            table.add_column(col)
        for x in r["formats"]:
            e, b = x["epm"], x["bits_per_effective_param"]
            table.add_row(x["format"] + ("" if x["observed"] else " (predicted)"), x["family"],
                          f"{x['bits_per_param']:.3f}", f"{e['mean']:.3f} [{e[key][0]:.3f}, {e[key][1]:.3f}]",
                          f"{b['mean']:.3f} [{b[key][0]:.3f}, {b[key][1]:.3f}]", f"{x['p_lowest']:.3f}")
        console = Console(width=160)
        with console.capture() as cap:
            console.print(table)
            for s in r["steps"]:
                console.print(f"{s['family']}: {s['from']} -> {s['to']}: P(pays) {s['p_pays']:.3f}, {s['verdict']}")
            for g in r["regions"]:
                console.print(f"best from {g['from_bytes']:.3g} to {g['to_bytes']:.3g} bytes: {g['format']} "
                              f"({g['family']}, P(best) >= {g['p_best_min']:.2f})")
            if plot:
                console.print(f"plot written to {plot}")
        return cap.get().rstrip()

    def query(saved) -> dict:
        result = run_frontier(saved, formats=fmts, min_bytes=min_bytes, max_bytes=max_bytes, points=points,
                              min_params=min_params, hdi=hdi, **regime)
        _diagnostics_warning(result)
        if plot:
            from bayes_epm.plots import plot_frontier

            plot_frontier(result, plot)
        return result

    return _answer(study, query, text, as_json)


@app.command()
def report(
    study: Annotated[str, typer.Argument(help="Study directory.")],
    out: Annotated[Optional[str], typer.Option(help="Output directory (default: STUDY/report).")] = None,
) -> int:
    """Write the study's report: PNG figures (loss against N with posterior bands, EPMs, the order of the runs,
    rank and trace plots, the memory frontier) and report.html."""
    from bayes_epm.report import write_report
    from bayes_epm.store import Study

    Study.open(study).close()  # a clear error for a directory that is no study
    with Console(stderr=True).status("drawing the report"):
        path = write_report(study, out)
    print(f"report written to {path}")
    return 0


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to bind; any other than loopback needs a bearer token.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    studies: Annotated[str, typer.Option(help="Directory whose subdirectories are the studies served.")] = "studies",
    token_file: Annotated[Optional[str], typer.Option(help="File whose first line is the bearer token (else the "
                                                      "environment variable BAYES_EPM_TOKEN).")] = None,
) -> int:
    """Serve the studies over HTTP (FastAPI; OpenAPI schema at /docs and /openapi.json) until interrupted."""
    from bayes_epm.service import check_token, read_token, serve as run_server

    if not 0 < port < 65536:
        raise InvalidInputError(f"--port {port} is not valid; it must be in 1-65535")
    token = read_token(token_file, dict(os.environ))
    check_token(host, token)
    from pathlib import Path

    if not Path(studies).is_dir():
        raise InvalidInputError(f"--studies {studies!r} is not a directory")
    run_server(studies, host=host, port=port, token=token)
    return 0


sweep_app = typer.Typer(help="Active sweeps: propose, train and refit until the targets' EPMs are pinned down.",
                        no_args_is_help=True)
runs_app = typer.Typer(help="A study's runs: import runs trained elsewhere, export the study's runs.",
                       no_args_is_help=True)
priors_app = typer.Typer(help="Priors for compression methods: import a prior file, list and show a study's priors.",
                         no_args_is_help=True)
app.add_typer(sweep_app, name="sweep")
app.add_typer(runs_app, name="runs")
app.add_typer(priors_app, name="priors")


def _sweep_printer(console: Console, budget: float):
    def on_event(kind: str, p: dict) -> None:
        if kind == "requeued":
            console.print(f"resuming: {p['runs']} run(s) that were in flight will run again")
        elif kind == "started":
            console.print(f"  start  #{p['id']:<4} {p['format']:<12} N={p['params']:.3g} D={p['tokens']:.3g}")
        elif kind == "finished":
            c = p["counts"]
            what = f"loss {p['loss']:.4f}" if p["status"] == "done" else f"{p['status']}: {p['error'][:80]}"
            console.print(f"  {p['status']:<6} #{p['id']:<4} {p['format']:<12} {what}   "
                          f"[{c['done']} done, {c['running']} in flight, {c['failed']} failed, "
                          f"{c['diverged']} diverged; FLOPs {p['flops_spent']:.3g} of {budget:.3g}]")
        elif kind == "fitted":
            d = p["diagnostics"]
            health = "converged" if d.converged else "NOT converged: " + "; ".join(d.problems())
            console.print(f"[bold]fit {p['iteration']}[/bold] ({p['fit_s']:.0f} s, {health}); "
                          f"FLOPs {p['flops_spent']:.3g} of {budget:.3g} ({100 * p['flops_spent'] / budget:.1f}%)")
            for t in p["targets"]:
                console.print(f"    EPM {t.format:<12} {t.mean:.3f}  90% HDI [{t.lo:.3f}, {t.hi:.3f}] "
                              f"width {t.hdi_width:.3f}")
        elif kind == "proposed":
            b = p["batch"]
            busy = f" ({p['in_flight']} still in flight)" if p.get("in_flight") else ""
            console.print(f"next {len(b)} run(s){busy}: " + ", ".join(
                f"{r['format']} N={r['params']:.3g} D/N={r['tokens_per_param']:g}" for r in b.to_dict("records")))
    return on_event


def _sweep(study_dir: str, config: str | None, as_json: bool, resume_only: bool) -> int:
    from pathlib import Path

    from bayes_epm.store import CONFIG, Study
    from bayes_epm.sweep import run_sweep

    exists = (Path(study_dir) / CONFIG).is_file()
    if resume_only or (exists and config is None):
        study = Study.open(study_dir)
    elif exists:
        raise InvalidInputError(f"{study_dir!r} already holds a study; continue it with `bayes-epm sweep run "
                                f"{study_dir}` (without --config) or `bayes-epm sweep resume {study_dir}`")
    elif config is None:
        raise InvalidInputError(f"no study in {study_dir!r}; create one with `bayes-epm sweep run {study_dir} "
                                "--config FILE`")
    else:
        from bayes_epm.config import load_config
        from bayes_epm.sweep import preflight

        preflight(load_config(config))  # a config that cannot run creates nothing
        study = Study.create(study_dir, config)
    console = Console(stderr=as_json, soft_wrap=True)
    with study:
        outcome = run_sweep(study, _sweep_printer(console, study.config.budget.flops))
    result = outcome.to_dict()
    if as_json:
        _print_json(result)
    else:
        console.print(f"stopped because of the {outcome.stopped_because}: {outcome.runs} runs done, "
                      f"{outcome.failed} failed, {outcome.diverged} diverged, {outcome.flops_spent:.3g} FLOPs; "
                      f"posterior in {outcome.posterior}")
    if not outcome.diagnostics.get("converged", False):
        print("bayes-epm: warning: the last fit did not converge; its intervals are not to be trusted",
              file=sys.stderr)
        return EXIT_FAILED
    return 0


@sweep_app.command("run")
def sweep_run(
    study: Annotated[str, typer.Argument(help="Study directory (created from --config, or continued).")],
    config: Annotated[Optional[str], typer.Option(help="Study config (TOML) for a new study.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object at the end (progress on stderr).")] = False,
) -> int:
    """Create or continue a study and sweep until the budget is spent or every target is pinned down."""
    return _sweep(study, config, as_json, resume_only=False)


@sweep_app.command("resume")
def sweep_resume(
    study: Annotated[str, typer.Argument(help="Study directory.")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> int:
    """Continue a study whose driver stopped or was killed: no finished run is lost or run again."""
    return _sweep(study, None, as_json, resume_only=True)


@sweep_app.command("status")
def sweep_status(
    study: Annotated[str, typer.Argument(help="Study directory.")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> int:
    """Runs by status, FLOPs spent against the budget, and each target's current EPM."""
    from bayes_epm.store import Study
    from bayes_epm.sweep import status

    with Study.open(study) as st:
        result = status(st)
    if as_json:
        _print_json(result)
        return 0
    c = result["counts"]
    print(f"{result['study']}: " + ", ".join(f"{v} {k}" for k, v in c.items())
          + f"; FLOPs {result['flops_spent']:.3g} of {result['flops_budget']:.3g}")
    for name, t in result["targets"].items():
        print(f"  EPM {name}: {_interval_text(t)}")
    return 0


@sweep_app.command("propose")
def sweep_propose(
    study: Annotated[str, typer.Argument(help="Study directory.")],
    n: Annotated[int, typer.Option("-n", help="How many runs.")] = 4,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> int:
    """The next runs and their scores, without running or storing them (for your own scheduler)."""
    from bayes_epm.store import Study
    from bayes_epm.sweep import propose_only

    if n < 1:
        raise SpecError(f"-n {n} is not valid; it must be a positive integer")
    with Study.open(study) as st:
        table = propose_only(st, n)
    rows = table[["params", "tokens", "format", "flops", "score"]].to_dict("records")
    if as_json:
        _print_json({"runs": rows})
    else:
        for r in rows:
            print(f"{r['format']:<12} params {r['params']:.4g}  tokens {r['tokens']:.4g}  FLOPs {r['flops']:.3g}  "
                  f"score {r['score']:.3g}")
    return 0


@runs_app.command("import")
def runs_import(
    study: Annotated[str, typer.Argument(help="Study directory.")],
    runs: Annotated[str, typer.Argument(help="Canonical run table (CSV/Parquet) or published:NAME.")],
    source: Annotated[Optional[str], typer.Option(help="Label for rows without a `source` (default: the file name).")] = None,
) -> int:
    """Add runs trained elsewhere to a study as evidence (validated first: a bad table adds nothing)."""
    from bayes_epm.store import Study

    table = _load_runs_arg(runs, source)
    with Study.open(study) as st:
        n = st.import_runs(table, source or "imported")
    print(f"imported {n} runs into {study}")
    return 0


@runs_app.command("export")
def runs_export(
    study: Annotated[str, typer.Argument(help="Study directory.")],
    out: Annotated[str, typer.Option(help="Output file (.csv or .parquet).")],
) -> int:
    """Write the study's finished runs as a canonical run table."""
    from bayes_epm.store import Study

    if not out.endswith((".csv", ".parquet")):
        raise InvalidInputError(f"--out {out!r} is not valid; it must end in .csv or .parquet")
    with Study.open(study) as st:
        table = st.fit_table()
    table.to_parquet(out, index=False) if out.endswith(".parquet") else table.to_csv(out, index=False)
    print(f"wrote {len(table)} runs to {out}")
    return 0


@priors_app.command("import")
def priors_import(
    study: Annotated[str, typer.Argument(help="Study directory.")],
    file: Annotated[str, typer.Argument(help="Prior file (TOML, [method.NAME] tables; schema in the README).")],
    replace: Annotated[bool, typer.Option(help="Replace the priors of a method the study already has.")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> int:
    """Import a prior file into a study (checked in full first: a bad file changes nothing)."""
    from bayes_epm.priors import load_prior_file, summary
    from bayes_epm.store import Study

    with Study.open(study) as st:
        new = load_prior_file(file, literature=st.config.priors.literature)
        st.import_priors(new, replace=replace)
    result = {"imported": summary(new)["methods"], "study": study,
              "note": "the next fit of the study uses these priors (`bayes-epm sweep resume` refits it)"}
    if as_json:
        _print_json(result)
    else:
        for m in result["imported"]:
            parts = [f"epm priors at {', '.join(m['epm_levels'])}" if m["epm_levels"] else "",
                     f"GMSE at {len(next(iter(m['gmse_at'].values())))} {next(iter(m['gmse_at']))} values"
                     if any(m["gmse_at"].values()) else "",
                     f"joint prior from {m['from_posterior']}" if m["from_posterior"] else ""]
            print(f"imported {m['kind']} {m['name']}: {'; '.join(p for p in parts if p)}")
        print(result["note"])
    return 0


@priors_app.command("list")
def priors_list(
    study: Annotated[str, typer.Argument(help="Study directory.")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> int:
    """Every prior of a study: imported methods and the literature table, each with its source."""
    from bayes_epm.priors import summary
    from bayes_epm.store import Study

    with Study.open(study) as st:
        result = summary(st.config.priors)
    if as_json:
        _print_json(result)
        return 0
    console = Console()
    table = Table(title="methods", title_justify="left")
    for col in ("name", "kind", "epm priors", "GMSE at", "from posterior", "source"):
        table.add_column(col)
    for m in result["methods"]:
        table.add_row(m["name"], m["kind"], ", ".join(m["epm_levels"]) or "-",
                      "; ".join(f"{k} {', '.join(f'{v:g}' for v in vs)}" for k, vs in m["gmse_at"].items() if vs) or "-",
                      m["from_posterior"] or "-", m["source"])
    console.print(table if result["methods"] else "no imported methods")
    if result["literature_enabled"]:
        lit = Table(title="literature (default population priors; log-normal, 90% interval)", title_justify="left")
        for col in ("format", "family", "EPM", "90%", "source"):
            lit.add_column(col)
        for e in result["literature"]:  # citations short here; `priors show` and --json give them in full
            cites = re.findall(r"([A-Z][A-Za-z-]+ et al\. \d{4})[^;]*?arXiv (\d{4}\.\d{4,5})", e["source"])
            lit.add_row(e["name"], e["family"], f"{e['epm']:.2f}", f"{e['interval_90'][0]:.2f}-{e['interval_90'][1]:.2f}",
                        "; ".join(f"{who}, arXiv:{num}" for who, num in cites) or e["source"])
        console.print(lit)
    else:
        console.print("literature table: off ([priors] literature = false)")
    return 0


@priors_app.command("show")
def priors_show(
    study: Annotated[str, typer.Argument(help="Study directory.")],
    name: Annotated[str, typer.Argument(help="A method name, or a format of the literature table.")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> int:
    """One prior in full: its distributions and quantiles, GMSE with Monte Carlo error, correlations."""
    from bayes_epm.priors import show
    from bayes_epm.store import Study

    with Study.open(study) as st:
        p = st.priors
        result = show(st.config.priors, name, {"F_mu": p.F_mu, "C_mu": p.C_mu, "curve_sigma": p.curve_sigma,
                                               "level_sigma": p.level_sigma, "quantizer_sigma": p.quantizer_sigma})
    if as_json:
        _print_json(result)
        return 0
    print(f"{result['name']} ({result['kind']})")
    if result["kind"] == "literature":
        lo, mid, hi = result["quantiles_5_50_95"]
        print(f"  {result['family']}: EPM {result['epm']} [{result['low']}, {result['high']}] -> log-normal, "
              f"5/50/95% {lo:.3f} / {mid:.3f} / {hi:.3f}")
        print(f"  source: {result['source']}")
        for key in ("quote", "note"):
            if result[key]:
                print(f"  {key}: {result[key]}")
        return 0
    print(f"  source: {result['source']}" + (f"; callable {result['callable']}" if result["callable"] else ""))
    for lv in result["levels"]:
        q = lv["quantiles_5_50_95"]
        print(f"  {lv['level']}: {lv['describe']}, 5/50/95% {q[0]:.3f} / {q[1]:.3f} / {q[2]:.3f} ({lv['source']})")
    for g in result["gmse"]:
        q = g["epm_on_curve_prior_5_50_95"]
        at = f"{g['bits']} bits" if "bits" in g else f"sparsity {g['sparsity']:g}"
        print(f"  {at}: GMSE {g['gmse']:.4g} +- {g['se']:.1g} (MC, {g['relative_se']:.2%}); on the curve's "
              f"prior EPM 5/50/95% {q[0]:.3f} / {q[1]:.3f} / {q[2]:.3f}")
    if "from_posterior" in result:
        fp = result["from_posterior"]
        print(f"  from the posterior of {fp['study']} ({fp['n_draws']} draws), normal on the unconstrained scale:")
        for i, n in enumerate(fp["names"]):
            corr = " ".join(f"{c:+.2f}" for c in fp["correlation"][i])
            print(f"    {n:<24} mean {fp['mean'][i]:+.4f} sd {fp['sd'][i]:.4f}  corr {corr}")
    return 0


def _fail(message: str) -> None:
    print(f"bayes-epm: error: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: runs the app and maps errors to exit codes (module docstring)."""
    try:
        code = app(args=argv, prog_name="bayes-epm", standalone_mode=False)
    except click_exceptions.UsageError as exc:
        message = " ".join(exc.format_message().split())
        if message:  # empty for a bare `bayes-epm`, which has already printed the help
            _fail(message)
        code = EXIT_BAD_INPUT
    except InvalidInputError as exc:
        _fail(" ".join(str(exc).split()))
        code = EXIT_BAD_INPUT
    except typer.Abort:
        _fail("aborted")
        code = 130
    except Exception as exc:  # a bug or an environment failure: one line, unless asked for the traceback
        if os.environ.get("BAYES_EPM_DEBUG"):
            raise
        _fail(f"{type(exc).__name__}: {' '.join(str(exc).split())} (set BAYES_EPM_DEBUG=1 for the traceback)")
        code = EXIT_FAILED
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
