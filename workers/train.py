"""``train(spec) -> RunResult``: train one small compressed transformer and report its final loss.

A pure function of the spec (no Ray, no store). Bad input (an unknown format, an unreadable data
file, a CUDA device that is not there, a format that does not fit the model's shape) raises
:class:`~bayes_epm.errors.InvalidInputError` from :func:`prepare`, before any training starts. After that nothing escapes: a NaN/inf loss ends the run as
``diverged`` (with the step), any other exception as ``failed`` (with the error), and the caller
always gets a :class:`~bayes_epm.workers.spec.RunResult`.

Optimiser: AdamW (betas 0.9/0.95), linear warm-up then cosine decay, global gradient-norm clip.
On CUDA the forward pass runs under bf16 autocast (master weights fp32); on CPU in fp32.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from bayes_epm import __version__
from bayes_epm.errors import InvalidInputError, SpecError
from bayes_epm.models import GPT, GPTConfig, compress_, non_embedding_params, shape_for_params, sparsity_schedule
from bayes_epm.workers.data import TokenData, eval_windows, load_tokens, sample_batch
from bayes_epm.workers.spec import RunResult, TrainSpec, peak_lr

Progress = Callable[[int, int, float], None]  # (steps done, total steps, last training loss)
EVAL_BATCH = 64  # held-out windows per forward pass


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def lr_at(step: int, steps: int, peak: float, warmup_frac: float, min_lr_frac: float) -> float:
    """Learning rate at ``step`` (0-based): linear warm-up, then cosine decay to ``min_lr_frac * peak``."""
    warmup = max(1, round(warmup_frac * steps)) if warmup_frac > 0 else 0
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (min_lr_frac + (1 - min_lr_frac) * 0.5 * (1 + math.cos(math.pi * progress)))


def _optimizer(model: torch.nn.Module, spec: TrainSpec, lr: float, device: torch.device) -> torch.optim.AdamW:
    decay = [p for p in model.parameters() if p.dim() >= 2]  # matrices and embeddings
    no_decay = [p for p in model.parameters() if p.dim() < 2]  # biases and LayerNorm gains
    groups = [{"params": decay, "weight_decay": spec.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), fused=device.type == "cuda")


@torch.no_grad()
def evaluate(model: GPT, data: TokenData, spec: TrainSpec, device: torch.device, autocast) -> float:
    """Mean cross-entropy (nats/token) over the fixed held-out windows."""
    model.eval()
    x_all, y_all = eval_windows(data.val, spec.context, spec.eval_tokens)  # (W, T) each
    total, count = 0.0, 0
    for i in range(0, x_all.size(0), EVAL_BATCH):
        x, y = x_all[i:i + EVAL_BATCH].to(device), y_all[i:i + EVAL_BATCH].to(device)
        with autocast():
            _, loss = model(x, y)
        total += float(loss) * y.numel()
        count += y.numel()
    model.train()
    return total / count


@dataclass
class Prepared:
    """A run checked and built, ready to train: everything that can be bad input has been checked."""

    spec: TrainSpec
    data: TokenData
    device: torch.device
    model: GPT
    layers: list
    base: dict  # the result fields known before training


def prepare(spec: TrainSpec) -> Prepared:
    """Check the spec against its data and device, build the model and compress it.

    Raises :class:`~bayes_epm.errors.InvalidInputError` for bad input (unreadable or too short
    data, a CUDA device that is not there, a format that does not fit the model's shape);
    nothing has been trained when it does.
    """
    data = load_tokens(spec.data, spec.data_dtype)
    eval_windows(data.val, spec.context, spec.eval_tokens)  # the held-out set must exist
    device = resolve_device(spec.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SpecError(f"device {spec.device!r} was asked for, but torch sees no CUDA device (torch "
                        f"{torch.__version__}, built {'with' if torch.version.cuda else 'without'} CUDA); "
                        "use --device cpu or auto, or install a CUDA build of torch")
    torch.manual_seed(spec.seed)
    try:
        model = GPT.for_params(spec.params, data.vocab_size, spec.context)
    except RuntimeError as exc:  # e.g. not enough memory for the parameters
        raise SpecError(f"cannot build a model of {spec.params:.3g} parameters, vocabulary "
                        f"{data.vocab_size} and context {spec.context}: {exc}") from None
    layers = compress_(model, spec.fmt)  # may raise CompressionError
    return Prepared(spec, data, device, model, layers,
                    _base_fields(spec, model.cfg, str(device), data.source, data.sha256))


def train(spec: TrainSpec | Prepared, progress: Progress | None = None) -> RunResult:
    """Train the run described by ``spec``; see the module docstring for what can go wrong."""
    t0 = time.perf_counter()
    run = spec if isinstance(spec, Prepared) else prepare(spec)
    state = {"step": 0}  # steps done, for the result of a run that fails part-way
    try:
        return _run(run, t0, progress, state)
    except InvalidInputError:
        raise
    except Exception as exc:  # any failure during training becomes a stored 'failed' result
        return _result(run.base, "failed", t0, tokens=state["step"] * run.spec.tokens_per_step,
                       error=f"{type(exc).__name__}: {exc}")


def _base_fields(spec: TrainSpec, cfg: GPTConfig, device: str, data_source: str, data_sha256: str) -> dict:
    """The result fields known before training starts."""
    return dict(
        params=non_embedding_params(cfg.n_layer, cfg.d_model), format=spec.format, device=device,
        seed=spec.seed, version=__version__, n_layer=cfg.n_layer, d_model=cfg.d_model, n_head=cfg.n_head,
        lr=spec.lr if spec.lr is not None else peak_lr(cfg.d_model), batch_size=spec.batch_size,
        context=spec.context, eval_tokens=spec.eval_tokens, data_source=data_source,
        data_sha256=data_sha256, torch_version=torch.__version__, spec=spec.to_dict(), steps=spec.steps,
    )


def failed_result(spec: TrainSpec, error: str) -> RunResult:
    """A ``failed`` result for a run that never reported one (its worker died, say)."""
    cfg = GPTConfig(*shape_for_params(spec.params), context=spec.context)
    return _result(_base_fields(spec, cfg, spec.device, spec.data, ""), "failed", time.perf_counter(),
                   tokens=0, error=error)


def _result(base: dict, status: str, t0: float, *, tokens: int, loss: float = math.nan,
            train_s: float | None = None, sparsity: float = 0.0, error: str = "",
            diverged_step: int | None = None, train_loss: float = math.nan) -> RunResult:
    wall = time.perf_counter() - t0
    return RunResult(
        status=status, loss=loss, tokens=tokens, flops=6.0 * base["params"] * tokens,
        sparsity_achieved=sparsity, wall_s=wall,
        tokens_per_s=tokens / train_s if train_s else 0.0, error=error,
        diverged_step=diverged_step, train_loss=train_loss, **base,
    )


def _run(run: Prepared, t0: float, progress: Progress | None, state: dict) -> RunResult:
    spec, data, device, model, base = run.spec, run.data, run.device, run.model, run.base
    lr = base["lr"]
    model.to(device)
    if device.type == "cuda":
        def autocast():
            return torch.autocast("cuda", dtype=torch.bfloat16)
    else:
        autocast = contextlib.nullcontext
    steps = spec.steps
    schedule = sparsity_schedule(run.layers, spec.fmt, steps)
    opt = _optimizer(model, spec, lr, device)
    rng = np.random.default_rng(spec.seed)
    t_train = time.perf_counter()
    ema = math.nan
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, lr, spec.warmup_frac, spec.min_lr_frac)
        if schedule is not None:
            schedule.step(step)
        x, y = sample_batch(data.train, spec.batch_size, spec.context, rng, device)
        with autocast():
            _, loss = model(x, y)
        loss_value = float(loss.detach())
        if not math.isfinite(loss_value):
            return _result(base, "diverged", t0, tokens=step * spec.tokens_per_step,
                           train_s=time.perf_counter() - t_train, diverged_step=step,
                           error=f"training loss became {loss_value} at step {step} of {steps}")
        loss.backward()
        if spec.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), spec.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        state["step"] = step + 1
        ema = loss_value if step == 0 else 0.95 * ema + 0.05 * loss_value
        if progress is not None:
            progress(step + 1, steps, loss_value)
    if device.type == "cuda":
        torch.cuda.synchronize()
    train_s = time.perf_counter() - t_train
    if schedule is not None:
        schedule.finalize()
    sparsity = schedule.achieved() if schedule is not None else 0.0
    tokens = steps * spec.tokens_per_step
    val = evaluate(model, data, spec, device, autocast)
    if not math.isfinite(val):
        return _result(base, "diverged", t0, tokens=tokens, train_s=train_s, sparsity=sparsity,
                       diverged_step=steps, train_loss=ema,
                       error=f"held-out loss is {val} after {steps} steps")
    return _result(base, "ok", t0, tokens=tokens, loss=val, train_s=train_s, sparsity=sparsity,
                   train_loss=ema)


def run_spec(spec: TrainSpec | dict, progress: Progress | None = None) -> RunResult:
    """:func:`train` from a spec or its dict (the form that crosses Ray and the store)."""
    if isinstance(spec, dict):
        spec = TrainSpec.from_dict(spec)
    if not isinstance(spec, TrainSpec):
        raise SpecError(f"expected a TrainSpec or its dict, got {type(spec).__name__}")
    return train(spec, progress)
