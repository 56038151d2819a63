"""A small decoder-only transformer (pre-LayerNorm, causal SDPA attention, GELU MLP).

Knows nothing of training, Ray or the Bayesian model. Size is asked for as a non-embedding
parameter count N; :func:`shape_for_params` is the one rule that turns N into a shape:

1. depth ``L = max(1, round((N / (12 * 32**2)) ** (1/3)))``: a fixed width/depth ratio of about
   32 (Kaplan et al. 2020 found the loss nearly flat over a wide range of aspect ratios, so one
   fixed ratio keeps the size the only thing that varies);
2. heads ``H = max(1, round(d / 64))`` with ``d = sqrt(N / (12 L))`` (head size about 64, one head
   for the smallest models);
3. width ``d``: the multiple of ``8 * H`` whose exact non-embedding count is nearest to N in ratio
   (multiples of 8 keep N:M groups of 2, 4 and 8 whole, and every head the same size).

Non-embedding parameters are everything in the blocks and the final LayerNorm:
``N = L * (12 d^2 + 13 d) + 2 d`` (biases and LayerNorms included). The token and position
embeddings are not counted; the output head is tied to the token embedding and uses no
``nn.Linear``, so :func:`bayes_epm.models.compress.compress_` compresses the blocks only.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

WIDTH_PER_LAYER = 32
HEAD_SIZE = 64
WIDTH_MULTIPLE = 8


@dataclass(frozen=True)
class GPTConfig:
    n_layer: int
    d_model: int
    n_head: int
    vocab_size: int = 256
    context: int = 128

    def to_dict(self) -> dict:
        return asdict(self)


def non_embedding_params(n_layer: int, d_model: int) -> int:
    """Exact non-embedding parameter count of a model of this depth and width."""
    return n_layer * (12 * d_model**2 + 13 * d_model) + 2 * d_model


def shape_for_params(params: float) -> tuple[int, int, int]:
    """``(n_layer, d_model, n_head)`` for a requested non-embedding parameter count (module docstring)."""
    n_layer = max(1, round((params / (12 * WIDTH_PER_LAYER**2)) ** (1 / 3)))
    d_est = math.sqrt(params / (12 * n_layer))
    n_head = max(1, round(d_est / HEAD_SIZE))
    step = WIDTH_MULTIPLE * n_head
    lo = max(step, math.floor(d_est / step) * step)
    d_model = min((lo, lo + step), key=lambda d: abs(math.log(non_embedding_params(n_layer, d) / params)))
    return n_layer, d_model, n_head


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.n_head = cfg.n_head
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)  # each (B, T, C)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # (B, H, T, C/H)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, T, C/H)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(cfg.d_model, 4 * cfg.d_model)
        self.proj = nn.Linear(4 * cfg.d_model, cfg.d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.gelu(self.fc(x)))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.wpe = nn.Embedding(cfg.context, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.apply(self._init)
        for name, p in self.named_parameters():  # GPT-2: scale residual projections by depth
            if name.endswith("proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    @classmethod
    def for_params(cls, params: float, vocab_size: int = 256, context: int = 128) -> "GPT":
        n_layer, d_model, n_head = shape_for_params(params)
        return cls(GPTConfig(n_layer, d_model, n_head, vocab_size, context))

    def non_embedding_params(self) -> int:
        """Counted from the module itself (it equals :func:`non_embedding_params` for this shape)."""
        emb = self.wte.weight.numel() + self.wpe.weight.numel()
        return sum(p.numel() for p in self.parameters()) - emb

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        """``idx`` (B, T) token ids -> logits (B, T, V), and the mean cross-entropy if ``targets`` (B, T)."""
        B, T = idx.shape
        pos = torch.arange(T, device=idx.device)
        x = self.wte(idx) + self.wpe(pos)  # (B, T, C)
        for block in self.blocks:
            x = block(x)
        logits = F.linear(self.ln_f(x), self.wte.weight)  # (B, T, V), head tied to the embedding
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss
