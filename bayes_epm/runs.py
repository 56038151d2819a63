"""Run tables: read, validate and canonicalise the training runs the model is fitted to.

A canonical run table has one row per run and the columns

- ``params``: dense-equivalent non-embedding parameter count N (> 0)
- ``tokens``: training tokens D (> 0)
- ``loss``: final loss, finite and > 0
- ``format``: canonical format name (see :mod:`bayes_epm.models.formats`), or instead the columns
  ``sparsity``, ``w_bits``, ``a_bits`` and optionally ``pattern``, ``quantizer``, ``sparsifier``; no format at
  all means dense
- ``source`` (optional): a label of where the run came from

:func:`validate_runs` checks every row before anything is written and raises one
:class:`RunTableError` that lists every bad row and says what is valid.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bayes_epm.errors import FormatError, InvalidInputError
from bayes_epm.models.formats import FULL_BITS, Format, grammar_help

REQUIRED = ("params", "tokens", "loss")
FORMAT_COLUMNS = ("sparsity", "w_bits", "a_bits", "pattern", "quantizer", "sparsifier")
CANONICAL = ("params", "tokens", "loss", "format", "source")
MAX_LISTED = 10  # bad rows named in one error message


class RunTableError(InvalidInputError):
    """A run table with missing columns or bad rows; the message lists them."""


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV or Parquet run table (by suffix); nothing is validated yet."""
    path = Path(path)
    if not path.is_file():
        raise RunTableError(f"run table {str(path)!r} does not exist or is not a file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            return pd.read_csv(path)
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise RunTableError(f"cannot read run table {str(path)!r}: {' '.join(str(exc).split())}") from None
    except ImportError as exc:  # Parquet needs pyarrow or fastparquet
        raise RunTableError(f"cannot read Parquet file {str(path)!r}: {exc}") from None
    raise RunTableError(f"run table {str(path)!r}: unknown file type {suffix!r}; valid: .csv, .parquet")


def _format_of_row(row: dict[str, Any]) -> Format:
    if isinstance(row.get("format"), str) and row["format"].strip():
        return Format.parse(row["format"])

    def value(key: str, default: Any) -> Any:
        v = row.get(key)
        return default if v is None or (isinstance(v, float) and math.isnan(v)) else v

    return Format(sparsity=float(value("sparsity", 0.0)), pattern=str(value("pattern", "unstructured")),
                  w_bits=value("w_bits", FULL_BITS), a_bits=value("a_bits", FULL_BITS),
                  quantizer=str(value("quantizer", "rms")), sparsifier=str(value("sparsifier", "magnitude")))


def _row_problems(row: dict[str, Any]) -> list[str]:
    problems = []
    for key in REQUIRED:
        v = row.get(key)
        try:
            ok = v is not None and math.isfinite(float(v)) and float(v) > 0
        except (TypeError, ValueError):
            ok = False
        if not ok:
            problems.append(f"{key}={v!r} (must be a finite number > 0)")
    return problems


def validate_runs(table: pd.DataFrame, source: str | None = None) -> pd.DataFrame:
    """Check a run table and return it canonical: columns ``params, tokens, loss, format, source``.

    Raises :class:`RunTableError` listing missing columns, or every bad row (first
    :data:`MAX_LISTED`) with what is wrong, and what is valid.
    """
    missing = [c for c in REQUIRED if c not in table.columns]
    if missing:
        raise RunTableError(f"run table lacks required column(s) {missing}; required: {list(REQUIRED)}, "
                            f"format as 'format' or as {list(FORMAT_COLUMNS[:3])} (+ optional "
                            f"{list(FORMAT_COLUMNS[3:])}), optional 'source'; found {list(table.columns)}")
    if "format" in table.columns and any(c in table.columns for c in FORMAT_COLUMNS):
        raise RunTableError("run table has both a 'format' column and format columns "
                            f"({[c for c in FORMAT_COLUMNS if c in table.columns]}); give one of the two")
    if table.empty:
        raise RunTableError("run table has no rows")
    bad: list[str] = []
    formats: list[str] = []
    for i, row in enumerate(table.to_dict("records")):
        problems = _row_problems(row)
        try:
            formats.append(_format_of_row(row).name)
        except (FormatError, TypeError, ValueError) as exc:
            problems.append(str(exc).split("; valid:")[0])
            formats.append("")
        if problems:
            bad.append(f"row {i + 2}: " + ", ".join(problems))  # +2: 1-based, after the header line
    if bad:
        more = f" (and {len(bad) - MAX_LISTED} more)" if len(bad) > MAX_LISTED else ""
        raise RunTableError(f"{len(bad)} bad row(s) in the run table{more}: " + "; ".join(bad[:MAX_LISTED]) +
                            f". Valid: params, tokens, loss finite and > 0; formats {grammar_help()}")
    out = pd.DataFrame({
        "params": table["params"].astype(float).to_numpy(),
        "tokens": table["tokens"].astype(float).to_numpy(),
        "loss": table["loss"].astype(float).to_numpy(),
        "format": formats,
    })
    if "source" in table.columns:
        out["source"] = table["source"].fillna(source or "").astype(str).to_numpy()
    else:
        out["source"] = source or ""
    return out


def load_runs(path: str | Path, source: str | None = None) -> pd.DataFrame:
    """Read and validate a run table; ``source`` labels rows that have none (default: the file name)."""
    return validate_runs(read_table(path), source if source is not None else Path(path).name)


def format_counts(runs: pd.DataFrame) -> dict[str, int]:
    """Runs per format, dense first then by name."""
    counts = runs["format"].value_counts()
    return {f: int(counts[f]) for f in sorted(counts.index, key=lambda f: (f != "dense", f))}


def log_columns(runs: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``log N``, ``log D``, ``log L`` of a canonical run table, each (n_runs,)."""
    return (np.log(runs["params"].to_numpy(float)), np.log(runs["tokens"].to_numpy(float)),
            np.log(runs["loss"].to_numpy(float)))
