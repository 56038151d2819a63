"""A tiny grid on CPU: 3 sizes x (dense, s0.5, w4, w4a4), held-out loss table.

The loss should fall with size in every format and rise with compression at every size; the
script prints the table, then checks both orderings and says where they hold.

    python examples/tiny_grid.py                       # the README's table (about 10 minutes on 2 cores)
    python examples/tiny_grid.py --ray                 # the same runs as Ray tasks
    python examples/tiny_grid.py --sizes 2e4 --tokens-per-param 1 --formats dense w4   # seconds
"""

from __future__ import annotations

import argparse
import statistics

from bayes_epm.workers.spec import RunResult, TrainSpec
from bayes_epm.workers.train import train


def run_grid(sizes: list[float], formats: list[str], tokens_per_param: float, seeds: list[int],
             use_ray: bool) -> dict[tuple[float, str], list[RunResult]]:
    specs = [TrainSpec(params=n, tokens=n * tokens_per_param, format=f, seed=s, device="cpu")
             for n in sizes for f in formats for s in seeds]
    if use_ray:
        import ray

        from bayes_epm.workers.ray_task import run_many

        ray.init(include_dashboard=False, log_to_driver=False)
        try:
            results = run_many(specs)
        finally:
            ray.shutdown()
    else:
        results = []
        for i, spec in enumerate(specs, 1):
            results.append(train(spec))
            r = results[-1]
            print(f"[{i}/{len(specs)}] N={r.params:,} {r.format:<6} seed {r.seed}: loss {r.loss:.4f} "
                  f"({r.status}, {r.wall_s:.0f} s)", flush=True)
    grid: dict[tuple[float, str], list[RunResult]] = {}
    for spec, result in zip(specs, results):
        grid.setdefault((spec.params, spec.format), []).append(result)
    return grid


def report(grid: dict[tuple[float, str], list[RunResult]], sizes: list[float], formats: list[str]) -> bool:
    def loss(n, f):
        return statistics.mean(r.loss for r in grid[(n, f)])

    bad = [r for rs in grid.values() for r in rs if r.status != "ok"]
    for r in bad:
        print(f"run N={r.params} {r.format} seed {r.seed} {r.status}: {r.error}")
    exact = {n: grid[(n, formats[0])][0].params for n in sizes}
    print(f"\n| N (non-embedding) | tokens | " + " | ".join(formats) + " |")
    print("|---:|---:|" + "---:|" * len(formats))
    for n in sizes:
        tokens = grid[(n, formats[0])][0].tokens
        print(f"| {exact[n]:,} | {tokens:.2g} | " + " | ".join(f"{loss(n, f):.4f}" for f in formats) + " |")
    falls = {f: all(loss(a, f) > loss(b, f) for a, b in zip(sizes, sizes[1:])) for f in formats}
    rises = {n: all(loss(n, f) > loss(n, "dense") for f in formats if f != "dense") for n in sizes} \
        if "dense" in formats else {}
    print("\nloss falls with size: " + ", ".join(f"{f} {'yes' if ok else 'NO'}" for f, ok in falls.items()))
    if rises:
        print("every compressed format above dense: " +
              ", ".join(f"N={exact[n]:,} {'yes' if ok else 'NO'}" for n, ok in rises.items()))
    return not bad and all(falls.values()) and all(rises.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[2e4, 6e4, 2e5])
    parser.add_argument("--formats", nargs="+", default=["dense", "s0.5", "w4", "w4a4"])
    parser.add_argument("--tokens-per-param", type=float, default=20)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--ray", action="store_true", help="run the grid as Ray tasks on a local Ray")
    args = parser.parse_args()
    grid = run_grid(args.sizes, args.formats, args.tokens_per_param, args.seeds, args.ray)
    ok = report(grid, args.sizes, args.formats)
    print("\nboth orderings hold" if ok else "\nan ordering does not hold (see above)")


if __name__ == "__main__":
    main()
