"""Check the learning-rate width rule: held-out loss at 0.5x, 1x and 2x the rule's peak rate.

The rule (``bayes_epm.workers.spec.peak_lr``) should sit at or near the best of the three at
every size, so that no size is handicapped by its learning rate (which would bend the fitted law).

    python examples/lr_check.py [--sizes 2e4 1e5 3e5] [--tokens-per-param 20]
"""

from __future__ import annotations

import argparse

from bayes_epm.models import shape_for_params
from bayes_epm.workers.spec import TrainSpec, peak_lr
from bayes_epm.workers.train import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[2e4, 1e5, 3e5])
    parser.add_argument("--tokens-per-param", type=float, default=20)
    parser.add_argument("--multipliers", type=float, nargs="+", default=[0.5, 1.0, 2.0])
    args = parser.parse_args()
    print(f"{'params':>8} {'d_model':>7} {'rule lr':>8} " + " ".join(f"{m:>7}x" for m in args.multipliers))
    for n in args.sizes:
        d = shape_for_params(n)[1]
        base = peak_lr(d)
        losses = [train(TrainSpec(params=n, tokens=n * args.tokens_per_param, lr=base * m)).loss
                  for m in args.multipliers]
        print(f"{n:>8.0e} {d:>7} {base:>8.2e} " + " ".join(f"{v:>8.4f}" for v in losses), flush=True)


if __name__ == "__main__":
    main()
