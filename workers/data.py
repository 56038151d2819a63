"""Token data: the built-in corpus and a user's own text or token file.

Sources
-------
- ``"builtin"``: the pure-Python standard library of CPython 3.11.7 (about 12 MB of real text,
  shipped compressed in ``corpus/``, no download), read as bytes (vocabulary 256).
- a path to a text file: its bytes are the tokens (vocabulary 256).
- a path to a token file: a flat array of ``uint16`` (``.bin`` or ``.u16``, nanoGPT's layout) or
  ``uint32`` (``.u32``) token ids; the vocabulary is ``max id + 1``. ``dtype`` overrides the
  guess from the suffix.

Split
-----
Deterministic and the same for every source: the token stream is cut into blocks of
:data:`SPLIT_BLOCK` tokens and every :data:`VAL_EVERY`-th block (the last of each run of
``VAL_EVERY``) is held out for validation. Spreading the held-out blocks over the whole
stream keeps validation representative of it, and the final loss is measured on windows spread
evenly over all of them (:func:`eval_windows`). Training windows are drawn from the remaining
blocks concatenated; the few that span a seam where a held-out block was removed (about
``context / (49 * 8192)`` of them) see a discontinuity, a negligible effect. The SHA-256 of the tokens and the split rule is
reported with every run, so two runs can be checked to have seen the same data.
"""

from __future__ import annotations

import functools
import hashlib
import lzma
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from bayes_epm.errors import DataError

SPLIT_BLOCK = 8192
MAX_VOCAB = 1 << 20  # token ids above this are almost surely a wrong dtype, and the embedding would not fit
VAL_EVERY = 50
BUILTIN = "builtin"
DTYPES = {"text": np.uint8, "uint16": np.uint16, "uint32": np.uint32}
_SUFFIX_DTYPE = {".bin": "uint16", ".u16": "uint16", ".u32": "uint32"}


@dataclass(frozen=True)
class TokenData:
    """A token stream split into training and validation parts.

    Attributes
    ----------
    train, val : np.ndarray
        1-D arrays of token ids (uint8, uint16 or uint32).
    vocab_size : int
    source : str
        ``"builtin"`` or the resolved path.
    sha256 : str
        Hash of the tokens and of the split rule.
    """

    train: np.ndarray
    val: np.ndarray
    vocab_size: int
    source: str
    sha256: str


def valid_dtypes() -> str:
    return "auto, " + ", ".join(DTYPES)


def resolve_dtype(source: str, dtype: str = "auto") -> str:
    """The dtype a source will be read as (``text``, ``uint16`` or ``uint32``)."""
    if dtype != "auto":
        if dtype not in DTYPES:
            raise DataError(f"unknown data dtype {dtype!r}; valid: {valid_dtypes()}")
        return dtype
    if source == BUILTIN:
        return "text"
    return _SUFFIX_DTYPE.get(Path(source).suffix.lower(), "text")


def check_source(source: str, dtype: str = "auto") -> None:
    """Cheap checks at the edge: the file exists, is readable, and its size fits the dtype."""
    kind = resolve_dtype(source, dtype)
    if source == BUILTIN:
        if kind != "text":
            raise DataError(f"the built-in corpus is text; data dtype {dtype!r} does not apply (use auto or text)")
        return
    path = Path(source)
    if not path.is_file():
        raise DataError(f"data file {source!r} does not exist or is not a file; give a text file, a "
                        f"uint16/uint32 token file (.bin/.u16/.u32), or 'builtin'")
    try:
        with path.open("rb") as fh:
            fh.read(1)
    except OSError as exc:
        raise DataError(f"data file {source!r} cannot be read: {exc.strerror}") from None
    width = np.dtype(DTYPES[kind]).itemsize
    if path.stat().st_size % width:
        raise DataError(f"data file {source!r} has {path.stat().st_size} bytes, not a whole number of "
                        f"{kind} tokens ({width} bytes each); pass the right dtype ({valid_dtypes()})")


def load_tokens(source: str = BUILTIN, dtype: str = "auto") -> TokenData:
    """Load and split a token source (see the module docstring); cached per process."""
    check_source(source, dtype)
    kind = resolve_dtype(source, dtype)
    if source == BUILTIN:
        return _load(BUILTIN, kind, 0)
    path = Path(source).resolve()
    return _load(str(path), kind, path.stat().st_mtime_ns)


@functools.lru_cache(maxsize=4)
def _load(source: str, kind: str, mtime_ns: int) -> TokenData:
    if source == BUILTIN:
        raw = lzma.decompress(resources.files("bayes_epm.workers.corpus").joinpath("pystdlib.txt.xz").read_bytes())
        tokens = np.frombuffer(raw, dtype=np.uint8)
    else:
        tokens = np.fromfile(source, dtype=DTYPES[kind])
    if tokens.size < 2 * SPLIT_BLOCK * VAL_EVERY:
        raise DataError(f"data {source!r} has {tokens.size} tokens; at least {2 * SPLIT_BLOCK * VAL_EVERY} "
                        f"are needed ({VAL_EVERY} blocks of {SPLIT_BLOCK} for training per held-out block, twice)")
    vocab = 256 if kind == "text" else int(tokens.max()) + 1
    if vocab > MAX_VOCAB:
        raise DataError(f"data {source!r} read as {kind} has token id {vocab - 1}, above the largest supported "
                        f"vocabulary of {MAX_VOCAB}; is the dtype right? (valid: {valid_dtypes()})")
    n_blocks = -(-tokens.size // SPLIT_BLOCK)
    is_val = np.repeat(np.arange(n_blocks) % VAL_EVERY == VAL_EVERY - 1, SPLIT_BLOCK)[: tokens.size]
    digest = hashlib.sha256(tokens.tobytes())
    digest.update(f"|{kind}|block={SPLIT_BLOCK}|val_every={VAL_EVERY}".encode())
    return TokenData(train=tokens[~is_val], val=tokens[is_val], vocab_size=vocab, source=source,
                     sha256=digest.hexdigest())


def sample_batch(tokens: np.ndarray, batch: int, context: int, rng: np.random.Generator,
                 device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """``batch`` random windows: inputs ``x`` (B, T) and next-token targets ``y`` (B, T), int64."""
    starts = rng.integers(0, tokens.size - context, size=batch)  # last start: size - context - 1
    idx = starts[:, None] + np.arange(context + 1)  # (B, T+1)
    window = torch.from_numpy(tokens[idx].astype(np.int64))
    return window[:, :-1].to(device), window[:, 1:].to(device)


def eval_windows(tokens: np.ndarray, context: int, n_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed held-out set: ``n_tokens // context`` windows spread evenly over the whole split.

    ``tokens`` is a validation split (whole blocks of :data:`SPLIT_BLOCK` tokens, concatenated).
    Candidate windows are the non-overlapping windows that lie inside one block (so none spans
    the seam between two blocks that were not adjacent in the source); the set takes evenly
    spaced candidates, so it samples every part of the source rather than its beginning.
    Returns ``x``, ``y`` of shape (n_windows, T): inputs and next-token targets.
    """
    n_windows = n_tokens // context
    per_block = (min(SPLIT_BLOCK, tokens.size) - 1) // context
    n_blocks = tokens.size // SPLIT_BLOCK if tokens.size >= SPLIT_BLOCK else 1
    available = per_block * n_blocks
    if n_windows < 1 or available < n_windows:
        raise DataError(f"the validation split has {tokens.size} tokens, {available} windows of context "
                        f"{context}; {n_windows} are needed to evaluate {n_tokens} tokens; use a larger data "
                        "file, a shorter context or fewer eval tokens")
    pick = np.linspace(0, available - 1, n_windows).round().astype(np.int64)  # evenly spaced, distinct
    starts = (pick // per_block) * SPLIT_BLOCK + (pick % per_block) * context
    idx = starts[:, None] + np.arange(context + 1)  # (W, T+1)
    window = torch.from_numpy(tokens[idx].astype(np.int64))
    return window[:, :-1], window[:, 1:]
