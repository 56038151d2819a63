"""Step time of each compression format relative to dense at the same size, on CPU.

Formats are timed side by side in one run, interleaved round-robin (so drift of a noisy machine
hits all of them alike), each step a full training step (forward, backward, AdamW) of the model
``train()`` builds. Prints the median step time and its ratio to dense.

Targets (issue 2): <= 1.3x for sparse and weight-only formats, <= 1.6x for weights+activations.

    python benchmarks/compression_overhead.py [--params 1e5] [--rounds 15] [--steps 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from bayes_epm.models import GPT, Format, compress_, sparsity_schedule

FORMATS = ["dense", "s0.5", "2:4", "w4", "w8", "w4:absmax", "w4a4", "w8a8", "w4a4:absmax", "s0.5-w4a4"]


def make(fmt: str, params: float, context: int, steps_total: int):
    torch.manual_seed(0)
    model = GPT.for_params(params, context=context)
    layers = compress_(model, fmt)
    schedule = sparsity_schedule(layers, Format.parse(fmt), steps_total)
    if schedule is not None:
        schedule.set_sparsity(schedule.target)  # time the steady state: masks in place
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    return model, opt


def step(model, opt, x, y) -> None:
    _, loss = model(x, y)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=float, default=1e5)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--context", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=15, help="round-robin rounds")
    parser.add_argument("--steps", type=int, default=5, help="steps per format per round")
    parser.add_argument("--formats", nargs="*", default=FORMATS)
    args = parser.parse_args()

    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (args.batch, args.context), generator=gen)
    y = torch.randint(0, 256, (args.batch, args.context), generator=gen)
    runs = {f: make(f, args.params, args.context, 1000) for f in args.formats}
    for model, opt in runs.values():  # warm-up: allocator, oneDNN primitives, scipy table
        for _ in range(3):
            step(model, opt, x, y)
    times: dict[str, list[float]] = {f: [] for f in args.formats}
    for _ in range(args.rounds):
        for fmt, (model, opt) in runs.items():
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step(model, opt, x, y)
            times[fmt].append((time.perf_counter() - t0) / args.steps)

    n = next(iter(runs.values()))[0].non_embedding_params()
    print(f"N={n:,} non-embedding params, batch {args.batch} x context {args.context}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, median of {args.rounds} rounds")
    dense = statistics.median(times["dense"])
    print(f"{'format':<14}{'ms/step':>10}{'x dense':>10}{'target':>9}  verdict")
    for fmt in args.formats:
        med = statistics.median(times[fmt])
        f = Format.parse(fmt)
        target = 1.6 if f.a_bits < 16 else 1.3
        ratio = med / dense
        verdict = "" if fmt == "dense" else ("ok" if ratio <= target else "OVER")
        print(f"{fmt:<14}{1e3 * med:>10.2f}{ratio:>10.2f}{target if fmt != 'dense' else '':>9}  {verdict}")


if __name__ == "__main__":
    main()
