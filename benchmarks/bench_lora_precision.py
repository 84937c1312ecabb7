"""Benchmark: a LoRA training step and the validation evaluation in float32 and in bfloat16, side by side.

For each precision (``precision=f32`` / ``bf16`` of ``mirrorflow.experiments.lora``; the model and seed are
the same) it measures the wall time of a training step (batch × block tokens, forward + backward + SGD) and
of one evaluation batch (32 windows, forward only), counts their floating-point operations with
``torch.utils.flop_counter.FlopCounterMode``, and prints tokens/s, GFLOP/s and the fraction of this machine's
matrix-product peak for that dtype (a large square ``torch.mm``, measured here in the same run). The ratio
column is bf16 ÷ f32. It also prints whether the CPU has native bfloat16 units (AVX512-BF16 or AMX).

    .venv/bin/python benchmarks/bench_lora_precision.py [--model smollm2] [--threads 1] [--repeats 3] \
        [--eval-windows 32]
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from mirrorflow.config import build
from mirrorflow.experiments import lora
from mirrorflow.experiments.transformer_kit.tasks import EpochSampler
from mirrorflow.runtime import autocast, native_bf16


def gemm_peak(dtype: torch.dtype, n: int = 1536, repeats: int = 3) -> float:
    """GFLOP/s of an n×n×n ``torch.mm`` in ``dtype`` (best of ``repeats``)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def timed(fn, repeats: int) -> tuple[float, float]:
    """(best seconds, GFLOP) of ``fn()``: one counted call, then ``repeats`` timed calls."""
    with FlopCounterMode(display=False) as fc:
        fn()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best, fc.get_total_flops() / 1e9


def measure(model_name: str, precision: str, repeats: int, eval_windows: int) -> dict:
    cfg = build(
        lora.Config,
        {
            "model": model_name,
            "precision": precision,
            "seeds": "0",
            "val_windows": "32",
            "val_subset": "0",
            "device": "cpu",
        },
    )
    task = lora.make_task(cfg)
    model = lora.make_model(cfg, task, 0)
    model.train(False)
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(trainable, lr=cfg.train.lr, momentum=cfg.train.momentum)
    sampler = EpochSampler(task.n_train, cfg.train.batch_size, 0)
    batch = task.train_batch(sampler.indices(0))
    prec = cfg.resolved_precision

    def step() -> None:
        with autocast("cpu", prec):
            loss = task.loss(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    ev = {"tokens": task.eval_batches()[0]["tokens"][:eval_windows]}

    def evaluate() -> None:
        with torch.no_grad(), autocast("cpu", prec):
            task.eval_stats(model, ev)

    step()  # first-call costs
    t_step, f_step = timed(step, repeats)
    t_eval, f_eval = timed(evaluate, max(1, repeats - 1))
    return {
        "step_tokens": batch["tokens"].numel() - batch["tokens"].shape[0],
        "eval_tokens": ev["tokens"].shape[0] * (ev["tokens"].shape[1] - 1),
        "t_step": t_step,
        "f_step": f_step,
        "t_eval": t_eval,
        "f_eval": f_eval,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2", help="smollm2 (the study's model) or tiny-gpt2")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--eval-windows", type=int, default=32, help="validation windows in the timed evaluation batch")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"model {args.model}, {args.threads} thread(s); CPU capability {torch.backends.cpu.get_cpu_capability()}, "
        f"native bfloat16: {native_bf16('cpu')}; load average {os.getloadavg()[0]:.2f}"
    )
    peak = {"f32": gemm_peak(torch.float32), "bf16": gemm_peak(torch.bfloat16, repeats=1)}
    res = {p: measure(args.model, p, args.repeats, args.eval_windows) for p in ("f32", "bf16")}
    print(f"matrix-product peak (1536³ mm): f32 {peak['f32']:.1f} GFLOP/s, bf16 {peak['bf16']:.1f} GFLOP/s")
    print()
    print(
        "| pass | tokens | f32 tokens/s | f32 GFLOP/s (of f32 peak) | bf16 tokens/s | bf16 GFLOP/s (of f32 peak) "
        "| bf16 ÷ f32 |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, tok, t, f in (
        ("training step", "step_tokens", "t_step", "f_step"),
        ("evaluation batch", "eval_tokens", "t_eval", "f_eval"),
    ):
        cells = []
        for p in ("f32", "bf16"):
            r = res[p]
            gf = r[f] / r[t]
            cells += [f"{r[tok] / r[t]:.0f}", f"{gf:.1f} ({100 * gf / peak['f32']:.0f} %)"]
        ratio = (res["bf16"][tok] / res["bf16"][t]) / (res["f32"][tok] / res["f32"][t])
        print(f"| {name} | {res['f32'][tok]} | {' | '.join(cells)} | {ratio:.2f}× |")
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
