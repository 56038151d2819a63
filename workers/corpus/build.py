"""Rebuild the built-in corpus ``pystdlib.txt.xz`` from the running interpreter's standard library.

The shipped file was made with CPython 3.11.7 by ``python -m bayes_epm.workers.corpus.build``.
It is shipped rather than built on each machine because every CPython patch release changes the
standard library a little, and runs on different machines must see the same tokens (the result
records the corpus hash). The text is the pure-Python standard library, tests excluded, files in
sorted path order, each preceded by a one-line header naming it. Python's source is distributed
under the PSF License Agreement (``LICENSE-PSF.txt`` beside this file).
"""

from __future__ import annotations

import argparse
import lzma
import sysconfig
from pathlib import Path

EXCLUDED_PARTS = {"test", "tests", "idle_test", "site-packages", "__pycache__"}


def stdlib_files(root: Path) -> list[Path]:
    """Pure-Python standard-library files under ``root``, tests and site-packages excluded, sorted."""
    files = [p for p in root.rglob("*.py") if not EXCLUDED_PARTS.intersection(p.relative_to(root).parts)]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def build(out: Path) -> int:
    root = Path(sysconfig.get_paths()["stdlib"])
    chunks = []
    for path in stdlib_files(root):
        chunks.append(f"# ===== Lib/{path.relative_to(root).as_posix()} =====\n".encode())
        chunks.append(path.read_bytes())
    data = b"".join(chunks)
    out.write_bytes(lzma.compress(data, preset=9 | lzma.PRESET_EXTREME))
    return len(data)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("pystdlib.txt.xz"))
    args = parser.parse_args()
    print(f"wrote {build(args.out):,} bytes of text to {args.out}")
