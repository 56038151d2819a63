"""The published run tables shipped with the package, converted to canonical run tables.

The raw files are in ``bayes_epm/data/published/`` with ``SOURCES.md`` (where each came from,
its licence and its columns). Each converter returns ``(runs, skipped)``: the canonical table and
a table of the rows it could not express, each with the reason; nothing is dropped silently.

- ``chinchilla``: Hoffmann et al. 2022 runs as digitised by Epoch AI (arXiv 2404.10102). D = FLOP / (6 N).
  All 245 rows are returned; Epoch's main fit drops the 5 highest-loss runs (all below about 0.4
  tokens per parameter, at about 1e19 FLOP); :func:`chinchilla` with ``epoch_filter=True`` does the same.
- ``sparse_t5``: weight-sparse T5 on C4 (Frantar et al., ICLR 2024). N is the dense-equivalent
  count ``24 * 12 * 768**2 * scale`` (the authors' notebook multiplies by ``1 - sparsity`` to get
  non-zeros; our N is the dense count and the sparsity is the format). Tokens per step are not in
  the file; we take 512 sequences of 512 tokens (steps x 262,144), an assumption. A constant
  factor on D only rescales B (B (cD)^-beta = B c^-beta D^-beta): alpha, beta, E and the EPMs do not
  depend on it.
- ``quest``: QuEST quantization-aware runs (Panferov et al. 2025, arXiv 2502.05003). Bits of weights
  and activations; the quantizer class becomes the format's quantizer (``HadamardTrustQuantizer`` ->
  ``hadamard_trust``, ...); 2:4-sparse + INT4 runs (``FourEight``) become ``2:4-w4a4:<quantizer>``.
  FP4 runs are skipped: the format grammar has integer grids only.
"""

from __future__ import annotations

import re
from importlib import resources
from typing import Callable

import pandas as pd

from bayes_epm.errors import InvalidInputError
from bayes_epm.runs import validate_runs

T5_TOKENS_PER_STEP = 512 * 512  # batch 512 x input length 512 (Frantar et al. 2024, T5 on C4)
T5_DENSE_PARAMS_PER_SCALE = 24 * 12 * 768**2  # the authors' notebook: N = 24*(12*768^2)*scale*(1-s)


def _raw(name: str) -> pd.DataFrame:
    with resources.files("bayes_epm.data.published").joinpath(name).open("rb") as fh:
        return pd.read_csv(fh)


def chinchilla(epoch_filter: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    raw = _raw("chinchilla_approach3.csv")
    params = raw["Model Size"].astype(float)
    tokens = raw["Training FLOP"].astype(float) / (6 * params)
    table = pd.DataFrame({"params": params, "tokens": tokens, "loss": raw["loss"], "format": "dense",
                          "source": "chinchilla"})
    skipped = table.iloc[0:0].assign(reason=pd.Series(dtype=str))
    if epoch_filter:  # Epoch's main fit: drop the 5 highest-loss runs
        worst = table.index.isin(table["loss"].nlargest(5).index)
        skipped = table[worst].assign(reason="one of the 5 highest losses, dropped by Epoch's main fit")
        table = table[~worst]
    return validate_runs(table.reset_index(drop=True)), skipped.reset_index(drop=True)


def sparse_t5() -> tuple[pd.DataFrame, pd.DataFrame]:
    raw = _raw("sparse_scaling_t5_c4.csv")
    table = pd.DataFrame({
        "params": raw["scale"].astype(float) * T5_DENSE_PARAMS_PER_SCALE,
        "tokens": raw["steps"].astype(float) * T5_TOKENS_PER_STEP,
        "loss": raw["val-loss"].astype(float),
        "sparsity": raw["sparsity"].astype(float),
        "source": "sparse_t5",
    })
    skipped = table.iloc[0:0].assign(reason=pd.Series(dtype=str))
    return validate_runs(table), skipped


def _snake(quantizer_class: str) -> str:
    name = quantizer_class.removesuffix("Quantizer")
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _quest_row(row: dict) -> tuple[str | None, str]:
    """Format name of one QuEST run, or None and why not."""
    wq, aq = str(row["w_quant"]), str(row["a_quant"])
    w, a = int(row["w_bits"]), int(row["a_bits"])
    if "FP4" in wq or "FP4" in aq:
        return None, "FP4 is a floating-point format; the format grammar has integer grids only"
    if wq == "NoQuantizer" and aq == "NoQuantizer":
        return "dense", ""
    sparse = "FourEight" in wq
    wq = wq.replace("FourEight", "")
    quantizer = _snake(wq)
    if aq != "NoQuantizer" and _snake(aq) != quantizer:
        return None, f"weights ({wq}) and activations ({aq}) use different quantizers"
    quant = f"w{w}" + (f"a{a}" if aq != "NoQuantizer" else "") + f":{quantizer}"
    return ("2:4-" if sparse else "") + quant, ""


def quest() -> tuple[pd.DataFrame, pd.DataFrame]:
    raw = _raw("quest_runs_for_scaling.csv")
    names, reasons = zip(*(_quest_row(r) for r in raw.to_dict("records")))
    keep = pd.Series([n is not None for n in names])
    table = pd.DataFrame({
        "params": raw["non_embedding_parameters"].astype(float), "tokens": raw["tokens"].astype(float),
        "loss": raw["loss"].astype(float), "format": [n or "" for n in names], "source": "quest",
    })
    skipped = raw[~keep].assign(reason=[r for r, k in zip(reasons, keep) if not k])
    return validate_runs(table[keep].reset_index(drop=True)), skipped.reset_index(drop=True)


TABLES: dict[str, Callable[[], tuple[pd.DataFrame, pd.DataFrame]]] = {
    "chinchilla": chinchilla, "sparse_t5": sparse_t5, "quest": quest,
}


def load_published(name: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(runs, skipped)`` of a shipped table: ``chinchilla``, ``sparse_t5`` or ``quest``."""
    if name not in TABLES:
        raise InvalidInputError(f"unknown published table {name!r}; valid: {', '.join(TABLES)}")
    return TABLES[name]()
