"""Achieved FLOP/s of a training step, per model, against the machine's measured matmul peak.

    python bench/flops.py

Also the forward pass as evaluation runs it (eval mode), in batches of 256 and of 1,000, NCHW or channels_last.
FLOPs per step come from torch.utils.flop_counter (forward + backward of one batch); the peak is the best
of large square matmuls in fp32 and in bf16. Steps run as `fit` runs them (channels_last, autocast as
`amp=auto` picks)."""
import time, warnings
import torch
from torch.utils.flop_counter import FlopCounterMode
from mnist_lab.model import make_model, MODELS
from mnist_lab.train import resolve_amp
from common import finish, settle_malloc, train_step

BS = 128
# every model at its defaults (the cnn max-pools before batch norm: pool_first), the cnn as it was before that
# default (pool_first False), and the cnn as bench/fashion_93.py trains it (width 32)
CASES = {**{name: (name, {}) for name in MODELS}, "cnn pool_first False": ("cnn", {"pool_first": False}),
         "cnn width 32": ("cnn", {"width": 32}), "cnn width 32 pool_first False": ("cnn", {"width": 32, "pool_first": False})}


def matmul_peak(dtype) -> float:
    "Best FLOP/s of 2048x2048 matmuls over about 2 s. A CPU without native bf16 emulates it, about 100x slower:"
    a, b = torch.randn(2048, 2048, dtype=dtype), torch.randn(2048, 2048, dtype=dtype)
    t = time.perf_counter()
    a @ b  # so the warm-up is one product, timed: a slow one is the answer
    if (first := time.perf_counter() - t) > 1: return 2 * 2048 ** 3 / first
    for _ in range(2): a @ b
    n, t = 0, time.perf_counter()
    while time.perf_counter() - t < 2: a @ b; n += 1
    return n * 2 * 2048 ** 3 / (time.perf_counter() - t)


def step_flops_and_rate(name: str, args: dict, amp: str):
    torch.manual_seed(0)
    model = make_model(name, strict=args).to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    x = torch.randn(BS, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (BS,))
    step = lambda: train_step(model, opt, x, y, amp == "bf16")
    with FlopCounterMode(display=False) as fc: step()
    for _ in range(3): step()
    n, t = 0, time.perf_counter()
    while time.perf_counter() - t < 2: step(); n += 1
    return fc.get_total_flops(), n / (time.perf_counter() - t), model


@torch.no_grad()
def eval_rate(model, amp: str, bs: int, channels_last: bool = False) -> float:
    "Images/s of the forward pass in eval mode, in batches of `bs`, NCHW or channels_last input."
    model.eval()
    x = torch.randn(bs, 1, 28, 28)
    if channels_last: x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp == "bf16"):
        model(x)
        n, t = 0, time.perf_counter()
        while time.perf_counter() - t < 1: model(x); n += 1
    return bs * n / (time.perf_counter() - t)


if __name__ == "__main__":
    settle_malloc()  # freed activations stay with the process, as in `fit`
    warnings.filterwarnings("ignore")
    amp = resolve_amp("auto", torch.device("cpu"))
    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    print(f"{torch.get_num_threads()} threads; matmul peak fp32 {peaks['fp32'] / 1e9:.0f} GFLOP/s, "
          f"bf16 {peaks['bf16'] / 1e9:.0f} GFLOP/s; training steps use amp={amp}, batch {BS}")
    peak = peaks["bf16" if amp == "bf16" else "fp32"]
    rows = {}
    for label, (name, args) in CASES.items():
        flops, steps_per_s, model = step_flops_and_rate(name, args, amp)
        achieved = flops * steps_per_s
        evals = {"eval_images_per_s_bs256": eval_rate(model, amp, 256),  # evaluate's batches
                 "eval_images_per_s_bs1000": eval_rate(model, amp, 1000),  # evaluate's batches until 2026-11-29
                 "eval_images_per_s_bs1000_channels_last": eval_rate(model, amp, 1000, channels_last=True)}
        print(f"{label:>24}: {flops / 1e6:8.1f} MFLOP/step, {steps_per_s:7.1f} steps/s = {achieved / 1e9:6.1f} GFLOP/s "
              f"= {100 * achieved / peak:5.1f}% of the {'bf16' if amp == 'bf16' else 'fp32'} matmul peak "
              f"({BS * steps_per_s:,.0f} images/s); evaluation {evals['eval_images_per_s_bs256']:,.0f} images/s in "
              f"batches of 256, {evals['eval_images_per_s_bs1000']:,.0f} of 1,000, "
              f"{evals['eval_images_per_s_bs1000_channels_last']:,.0f} of 1,000 channels_last")
        rows[label] = {"mflop_per_step": flops / 1e6, "steps_per_s": steps_per_s, "gflop_per_s": achieved / 1e9,
                      "share_of_peak": achieved / peak, **evals}
    finish("flops", {"amp": amp, "peak_gflop_per_s": {k: v / 1e9 for k, v in peaks.items()}, "models": rows}, {})
