"""A new quantizer, as a user would write one: block absmax ("MX-like"), a scale per 32 weights.

``mxq(rows, bits)`` fake-quantizes a 2-D tensor (weights ``(out, in)`` or activations
``(tokens, in)``; ``in`` a multiple of 32): each block of 32 consecutive entries of a row gets
its own absmax scale and a symmetric mid-tread grid of ``2**(bits-1) - 1`` levels on each side
(one level at 1 bit). bayes-epm imports it from the prior file (``[method.mxq.gmse]``), measures
its error on Gaussian data, and trains with it (straight-through gradient).
"""

import torch

BLOCK = 32


def mxq(x: torch.Tensor, bits: int) -> torch.Tensor:
    rows, cols = x.shape
    if cols % BLOCK:
        raise ValueError(f"mxq needs rows of a multiple of {BLOCK} entries, got {cols}")
    blocks = x.reshape(rows, cols // BLOCK, BLOCK)
    qmax = max(2 ** (bits - 1) - 1, 1)
    scale = blocks.abs().amax(-1, keepdim=True).clamp_min(1e-12) / qmax
    return (torch.round(blocks / scale).clamp(-qmax, qmax) * scale).reshape(rows, cols)
