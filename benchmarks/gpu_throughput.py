"""Training throughput and model-FLOP utilisation (MFU) per format, for a GPU (bf16 autocast).

One short run per format at about 20M non-embedding parameters (issue 2's GPU check), each a
real ``train()`` call, reported side by side: tokens/s, its ratio to dense, and MFU against the
chip's dense bf16 peak. Model FLOPs per token count the matmuls of the forward and backward pass
(6 N plus attention, ``12 * n_layer * context * d_model``, as in the PaLM paper's MFU), so
fake-quantization work is overhead, not useful FLOPs.

    python benchmarks/gpu_throughput.py                        # on a CUDA machine (H200 peak 989 TFLOP/s)
    python benchmarks/gpu_throughput.py --params 2e4 --tokens 4e4 --device cpu --peak-tflops 0.2   # smoke
"""

from __future__ import annotations

import argparse

import torch

from bayes_epm.workers.spec import TrainSpec
from bayes_epm.workers.train import train

FORMATS = ["dense", "s0.5", "2:4", "w4", "w4a4", "w8a8", "s0.5-w4a4"]


def model_flops_per_token(params: int, n_layer: int, d_model: int, context: int) -> float:
    return 6.0 * params + 12.0 * n_layer * context * d_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=float, default=2e7)
    parser.add_argument("--tokens", type=float, default=2e7)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--context", type=int, default=512)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak of the chip")
    parser.add_argument("--formats", nargs="+", default=FORMATS)
    args = parser.parse_args()
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") and torch.cuda.is_available() else "cpu"
    print(f"device {name}, torch {torch.__version__}, N~{args.params:.2g}, D={args.tokens:.2g}, "
          f"batch {args.batch_size} x {args.context}, peak {args.peak_tflops} TFLOP/s")
    print(f"{'format':<11}{'status':>8}{'loss':>8}{'tokens/s':>12}{'x dense':>9}{'MFU %':>8}")
    dense_tps = None
    for fmt in args.formats:
        r = train(TrainSpec(params=args.params, tokens=args.tokens, format=fmt, batch_size=args.batch_size,
                            context=args.context, device=args.device, eval_tokens=args.batch_size * args.context))
        if r.status != "ok":
            print(f"{fmt:<11}{r.status:>8}  {r.error}")
            continue
        dense_tps = r.tokens_per_s if fmt == "dense" else dense_tps
        ratio = r.tokens_per_s / dense_tps if dense_tps else float("nan")
        mfu = r.tokens_per_s * model_flops_per_token(r.params, r.n_layer, r.d_model, r.context) / (args.peak_tflops * 1e12)
        print(f"{fmt:<11}{r.status:>8}{r.loss:>8.3f}{r.tokens_per_s:>12,.0f}{ratio:>9.2f}{100 * mfu:>8.2f}", flush=True)


if __name__ == "__main__":
    main()
