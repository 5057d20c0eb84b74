"""What the profile of a training step pointed at, tried side by side: ms per step of the cnn (batch 128, as `fit`
runs it: channels_last, autocast as `amp=auto` picks, Adam) in variants that alternate in one process, so a
slow spell of the machine hits all of them alike (median of 7 rounds of 20 steps).

    python bench/step_variants.py [--batch 128] [--amp auto|off|bf16]
    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 python bench/step_variants.py --amp off

The second form runs the same cores with only their AVX2 instructions (oneDNN's and ATen's kernels both), as a
CPU without AVX-512 runs it (`amp=auto` is off there); its file is named for the ISA it was limited to. It is a
stand-in, not such a CPU: caches, clocks and memory stay this machine's.

- `default`: the cnn as mnist_lab builds it (max pooling before batch norm: `pool_first`);
- `pool_first False`: the cnn before that default (pooling after the ReLU), and the same with the ReLU moved
  behind the pool (`relu after pool`: max pooling commutes with ReLU, so the same numbers for a quarter of the
  ReLU work);
- `fused Adam`: `torch.optim.Adam(fused=True)` (one kernel for all parameters) instead of the default on CPU
  tensors, a loop over the parameters (not foreach);
- `fp32`: autocast off (channels_last kept).
A measurement, no target: it names the CPU so that runs on different CPU kinds can be put side by side."""
import argparse, os, statistics, time, warnings
import torch
from torch import nn
from mnist_lab.model import make_model
from mnist_lab.train import resolve_amp
from common import finish, settle_malloc, train_step


def relu_after_pool() -> nn.Module:
    "The pool_first False cnn with each stage's ReLU behind its max pool: the same function, the same gradients."
    model = make_model("cnn", strict={"pool_first": False})
    for i in (0, 2):  # the two pooled stages: Sequential(conv, bn, relu), MaxPool2d
        model[i], model[i + 1] = model[i][:2], nn.Sequential(model[i + 1], nn.ReLU())
    return model


VARIANTS = {"default": (lambda: make_model("cnn"), {}, True),
            "pool_first False": (lambda: make_model("cnn", strict={"pool_first": False}), {}, True),
            "pool_first False, relu after pool": (relu_after_pool, {}, True),
            "fused Adam": (lambda: make_model("cnn"), {"fused": True}, True),
            "fp32": (lambda: make_model("cnn"), {}, False)}

if __name__ == "__main__":
    settle_malloc()  # freed activations stay with the process, as in `fit`
    warnings.filterwarnings("ignore")
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--amp", choices=["auto", "off", "bf16"], default="auto")
    a = ap.parse_args()
    bf16 = resolve_amp(a.amp, torch.device("cpu")) == "bf16"
    limits = {k: os.environ[k] for k in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY") if k in os.environ}
    x = torch.randn(a.batch, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (a.batch,))
    torch.manual_seed(0)
    runs = {}
    for name, (build, opt_args, autocast) in VARIANTS.items():
        model = build().to(memory_format=torch.channels_last)
        runs[name] = (model, torch.optim.Adam(model.parameters(), 1e-3, **opt_args), autocast and bf16)

    def steps(model, opt, amp, n):
        for _ in range(n): train_step(model, opt, x, y, amp)

    for run in runs.values(): steps(*run, 10)  # oneDNN primitives are created on the first steps
    ms = {name: [] for name in runs}
    for _ in range(7):
        for name, run in runs.items():
            t = time.perf_counter(); steps(*run, 20); ms[name].append((time.perf_counter() - t) / 20 * 1e3)
    base = statistics.median(ms["default"])
    result = {"batch": a.batch, "amp": "bf16" if bf16 else "off", "threads": torch.get_num_threads(), "isa_limits": limits,
              "variants": {}}
    for name, times in ms.items():
        med = statistics.median(times)
        print(f"{name:<36} {med:6.2f} ms/step ({a.batch / med * 1e3:8,.0f} images/s), {med / base:.2f}x the default's")
        result["variants"][name] = {"ms_per_step": med, "rounds": times, "images_per_s": a.batch / med * 1e3}
    isa = limits.get("ONEDNN_MAX_CPU_ISA", "").lower()
    finish("step_variants" + (f"-limited-to-{isa}" if isa else ""), result, {})
