"""Compression formats: a frozen, validated spec with one canonical name.

Grammar of a format name::

    dense
    [SPARSITY][-QUANT]          (at least one of the two)
    SPARSITY := s<fraction>[:<sparsifier>]   unstructured, 0 < fraction < 1   e.g. s0.5, s0.875, s0.5:wanda
              | <n>:<m>         N:M, n of every m consecutive inputs kept   e.g. 2:4
    QUANT    := w<bits>[a<bits>][:<quantizer>]
                bits 1-8, or 16 for "not quantized"; quantizer from the registry (default rms)
    sparsifier: how the pruned weights are chosen, from the registry (default magnitude; a prior
                file registers new ones, for unstructured sparsity)

Examples: ``s0.5``, ``2:4``, ``w4``, ``w4a4``, ``s0.75-w4a8``, ``2:4-w4:absmax``. Names are
normalised (``w4a16`` is ``w4``, ``w4:rms`` is ``w4``, ``w16`` is ``dense``) so that
``Format.parse(name).name`` is the canonical spelling and ``parse(f.name) == f``;
``s0.5:magnitude`` is ``s0.5``.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Any

from bayes_epm.errors import FormatError
from bayes_epm.models.quantize import known_quantizers
from bayes_epm.models.sparsity import DEFAULT_SPARSIFIER, PATTERNS, known_sparsifiers, pattern_family

FULL_BITS = 16  # "not quantized"
VALID_BITS = (1, 2, 3, 4, 5, 6, 7, 8, FULL_BITS)
DEFAULT_QUANTIZER = "rms"

_SPARSITY_RE = re.compile(r"^s(?P<frac>\d*\.?\d+)(?::(?P<sp>[A-Za-z_][A-Za-z0-9_]*))?$")
_NM_RE = re.compile(r"^(?P<n>\d+):(?P<m>\d+)$")
_QUANT_RE = re.compile(r"^w(?P<w>\d+)(?:a(?P<a>\d+))?(?::(?P<q>[A-Za-z_][A-Za-z0-9_]*))?$")


def grammar_help() -> str:
    """One line that says what a valid format name looks like."""
    return (
        "valid: 'dense' or [s<fraction>|<n>:<m>][-w<bits>[a<bits>][:<quantizer>]], e.g. s0.5, 2:4, "
        f"w4, w4a4, s0.75-w4a8, 2:4-w4:absmax; bits 1-8 or 16; quantizers: {', '.join(known_quantizers())}; "
        f"sparsity patterns: {', '.join(sorted(PATTERNS))}; sparsifiers (s<fraction>:<name>): "
        f"{', '.join(known_sparsifiers())}"
    )


@dataclass(frozen=True)
class Format:
    """A compression format.

    Parameters
    ----------
    sparsity : float
        Fraction of each compressed weight tensor that is zero at the end of training, in [0, 1).
        Stored rounded to 6 decimals (and must stay below 1 after rounding). For an N:M pattern it is ``1 - n/m`` (may be left at 0).
    pattern : str
        ``"unstructured"`` or ``"<n>:<m>"`` (e.g. ``"2:4"``).
    w_bits, a_bits : int
        Bits of weights and of activations (inputs of each linear layer): 1-8, or 16 = not quantized.
    quantizer : str
        Name of a registered quantizer (``rms``, ``absmax``, ...); ignored when nothing is quantized.
    sparsifier : str
        How the pruned weights are chosen: ``magnitude`` (default), or a sparsifier a prior file
        registered (unstructured sparsity only); ignored when nothing is pruned.
    """

    sparsity: float = 0.0
    pattern: str = "unstructured"
    w_bits: int = FULL_BITS
    a_bits: int = FULL_BITS
    quantizer: str = DEFAULT_QUANTIZER
    sparsifier: str = DEFAULT_SPARSIFIER

    def __post_init__(self) -> None:
        for field in ("w_bits", "a_bits"):
            bits = getattr(self, field)
            if isinstance(bits, bool) or not isinstance(bits, (int, float)) or not math.isfinite(bits) \
                    or bits != int(bits) or int(bits) not in VALID_BITS:
                raise FormatError(f"{field}={bits!r} is not valid; bits are 1-8, or 16 for "
                                  "not quantized")
            object.__setattr__(self, field, int(bits))
        self._validate_sparsity()
        if self.w_bits == FULL_BITS and self.a_bits == FULL_BITS:
            object.__setattr__(self, "quantizer", DEFAULT_QUANTIZER)  # irrelevant: nothing quantized
        elif self.quantizer not in known_quantizers():
            raise FormatError(f"unknown quantizer {self.quantizer!r}; registered quantizers: "
                              f"{', '.join(known_quantizers())}")
        if self.sparsity == 0.0:
            object.__setattr__(self, "sparsifier", DEFAULT_SPARSIFIER)  # irrelevant: nothing pruned
        elif self.sparsifier not in known_sparsifiers():
            raise FormatError(f"unknown sparsifier {self.sparsifier!r}; registered sparsifiers: "
                              f"{', '.join(known_sparsifiers())}")
        elif self.sparsifier != DEFAULT_SPARSIFIER and self.pattern != "unstructured":
            raise FormatError(f"sparsifier {self.sparsifier!r} prunes unstructured sparsity only, not "
                              f"the {self.pattern} pattern")

    def _validate_sparsity(self) -> None:
        s = self.sparsity
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not 0.0 <= round(float(s), 6) < 1.0:
            raise FormatError(f"sparsity={s!r} is not valid; sparsity is a fraction in [0, 1) with at most "
                              "6 decimals")
        s = round(float(s), 6)
        try:
            family = pattern_family(self.pattern)
        except ValueError as exc:
            raise FormatError(f"{exc}") from None
        if family == "n:m":
            n, m = (int(v) for v in self.pattern.split(":"))
            if not 0 < n < m:
                raise FormatError(f"N:M pattern {self.pattern!r} needs 0 < n < m (e.g. 2:4)")
            implied = round(1 - n / m, 6)
            if s not in (0.0, implied):
                raise FormatError(f"pattern {self.pattern} implies sparsity {implied}, got {s}")
            s = implied
        elif s == 0.0:
            object.__setattr__(self, "pattern", "unstructured")
        object.__setattr__(self, "sparsity", s)

    # ----------------------------------------------------------------- properties
    @property
    def is_dense(self) -> bool:
        """True when nothing is compressed."""
        return self.sparsity == 0.0 and not self.is_quantized

    @property
    def is_sparse(self) -> bool:
        return self.sparsity > 0.0

    @property
    def is_quantized(self) -> bool:
        return self.w_bits < FULL_BITS or self.a_bits < FULL_BITS

    @property
    def name(self) -> str:
        """The canonical name (see the module docstring)."""
        if self.is_dense:
            return "dense"
        parts = []
        if self.is_sparse:
            if self.pattern == "unstructured":
                parts.append("s" + f"{self.sparsity:.6f}".rstrip("0")
                             + (f":{self.sparsifier}" if self.sparsifier != DEFAULT_SPARSIFIER else ""))
            else:
                parts.append(self.pattern)
        if self.is_quantized:
            q = f"w{self.w_bits}"
            if self.a_bits < FULL_BITS:
                q += f"a{self.a_bits}"
            if self.quantizer != DEFAULT_QUANTIZER:
                q += f":{self.quantizer}"
            parts.append(q)
        return "-".join(parts)

    def __str__(self) -> str:
        return self.name

    # ----------------------------------------------------------------- conversion
    @classmethod
    def parse(cls, name: str | "Format") -> "Format":
        """Parse a format name (see the module docstring); a :class:`Format` passes through."""
        if isinstance(name, Format):
            return name
        if not isinstance(name, str):
            raise FormatError(f"a format name must be a string, got {type(name).__name__}; {grammar_help()}")
        text = name.strip()
        if text == "dense":
            return cls()
        parts = text.split("-")
        if not text or len(parts) > 2 or any(not p for p in parts):
            raise FormatError(f"invalid format {name!r}; {grammar_help()}")
        kw: dict[str, Any] = {}
        if (m := _SPARSITY_RE.match(parts[0])) is not None:
            kw["sparsity"] = float(m["frac"])
            if m["sp"] is not None:
                kw["sparsifier"] = m["sp"]
            if not 0.0 < round(kw["sparsity"], 6) < 1.0:
                raise FormatError(f"invalid format {name!r}: sparsity {m['frac']} must be strictly "
                                  f"between 0 and 1; {grammar_help()}")
            parts = parts[1:]
        elif (m := _NM_RE.match(parts[0])) is not None:
            kw["pattern"] = f"{int(m['n'])}:{int(m['m'])}"
            parts = parts[1:]
        if parts:
            m = _QUANT_RE.match(parts[0])
            if m is None or len(parts) > 1:
                raise FormatError(f"invalid format {name!r}: cannot read {parts[0]!r}; {grammar_help()}")
            kw["w_bits"] = int(m["w"])
            kw["a_bits"] = int(m["a"]) if m["a"] is not None else FULL_BITS
            if m["q"] is not None:
                kw["quantizer"] = m["q"]
        try:
            return cls(**kw)
        except FormatError as exc:
            raise FormatError(f"invalid format {name!r}: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Format":
        fields = {k: d[k] for k in ("sparsity", "pattern", "w_bits", "a_bits", "quantizer", "sparsifier") if k in d}
        if not fields and "name" in d:
            return cls.parse(d["name"])
        return cls(**fields)


def parse_format(name: str | Format) -> Format:
    """Shorthand for :meth:`Format.parse`."""
    return Format.parse(name)
