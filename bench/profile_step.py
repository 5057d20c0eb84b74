"""Where a training step's time goes: torch.profiler over steps of a cnn as `fit` runs them (channels_last,
autocast as `amp=auto` picks, Adam), grouped by operator, and the share of the main groups: convolutions
(oneDNN), batch norm, max pooling, the optimizer, autocast's weight casts (`aten::_to_copy`), the rest.

    python bench/profile_step.py [--width 16] [--no-pool-first] [--batch 128] [--steps 50]

A measurement, no target: it names the CPU so that profiles of different CPU kinds can be put side by side."""
import argparse, warnings
import torch
from torch.profiler import profile, ProfilerActivity
from mnist_lab.model import make_model
from mnist_lab.train import resolve_amp
from common import finish, settle_malloc, train_step

GROUPS = {"convolution": ("conv", "mkldnn"), "batch norm": ("batch_norm",), "max pooling": ("max_pool",),
          "optimizer (Adam)": ("_foreach", "adam", "addcdiv", "lerp", "sqrt"), "weight casts (autocast)": ("_to_copy",),
          "loss": ("cross_entropy", "log_softmax", "nll_loss")}


def group(op: str) -> str:
    "The group an operator's name falls in ('other' for none)."
    return next((g for g, keys in GROUPS.items() if any(k in op.lower() for k in keys)), "other")


if __name__ == "__main__":
    settle_malloc()  # freed activations stay with the process, as in `fit`
    warnings.filterwarnings("ignore")
    ap = argparse.ArgumentParser()
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--no-pool-first", dest="pool_first", action="store_false", help="the older cnn: pool after ReLU")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=50)
    a = ap.parse_args()
    amp = resolve_amp("auto", torch.device("cpu"))
    torch.manual_seed(0)
    model = make_model("cnn", width=a.width, strict={"pool_first": a.pool_first}).to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    x = torch.randn(a.batch, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (a.batch,))

    step = lambda: train_step(model, opt, x, y, amp == "bf16")
    for _ in range(10): step()  # oneDNN primitives are created on the first steps: not what a long run pays
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(a.steps): step()
    ops = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in ops)
    shares = {}
    for e in ops: shares[group(e.key)] = shares.get(group(e.key), 0) + e.self_cpu_time_total
    print(f"cnn width {a.width}{'' if a.pool_first else ' pool_first False'}, batch {a.batch}, amp {amp}, "
          f"{torch.get_num_threads()} threads: {total / a.steps / 1e3:.2f} ms of operator time a step")
    for g, t in sorted(shares.items(), key=lambda kv: -kv[1]): print(f"  {g:<26} {100 * t / total:5.1f}%")
    top = sorted(ops, key=lambda e: -e.self_cpu_time_total)[:12]
    print("top operators (self time):")
    for e in top: print(f"  {e.key:<44} {100 * e.self_cpu_time_total / total:5.1f}%  {e.count // a.steps} calls/step")
    finish("profile_step" + ("" if a.pool_first else "-pool_first-false"), {"width": a.width, "pool_first": a.pool_first, "batch": a.batch, "amp": amp,
                            "ms_per_step": total / a.steps / 1e3,
                            "shares": {g: t / total for g, t in shares.items()},
                            "top": [[e.key, e.self_cpu_time_total / total, e.count // a.steps] for e in top]}, {})
