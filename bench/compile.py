"""Does torch.compile pay for the default cnn? Compile time against the time it saves per training step.

    python bench/compile.py [--mode default] [--amp auto]

Steps run as `fit` runs them (channels_last, autocast as `amp=auto` picks, Adam); the model is compiled
(inductor), the optimizer step stays eager. Break-even = compile time / time saved per step, compared with
the number of steps of typical runs."""
import argparse, time, warnings
import torch
import torch.nn.functional as F
from mnist_lab.model import make_model
from mnist_lab.train import resolve_amp
from common import finish

BS = 128
RUNS = {"time_to_98 (mnist10k, 2 epochs)": 2 * 9000 // BS, "full MNIST or Fashion-MNIST, 5 epochs": 5 * 54000 // BS}


def steps_per_second(step, seconds: float = 3.0) -> float:
    n, t = 0, time.perf_counter()
    while time.perf_counter() - t < seconds: step(); n += 1
    return n / (time.perf_counter() - t)


def make_step(compiled: bool, amp: str, mode: str):
    torch.manual_seed(0)
    model = make_model("cnn").to(memory_format=torch.channels_last)
    net = torch.compile(model, mode=mode) if compiled else model
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    x = torch.randn(BS, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (BS,))
    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp == "bf16"):
            loss = F.cross_entropy(net(x).float(), y)
        opt.zero_grad(); loss.backward(); opt.step()
    return step


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", default="default", help="torch.compile mode: default, reduce-overhead, max-autotune")
    ap.add_argument("--amp", default="auto", choices=["auto", "off", "bf16"])
    a = ap.parse_args()
    warnings.filterwarnings("ignore")
    amp = resolve_amp(a.amp, torch.device("cpu"))
    eager = make_step(False, amp, a.mode)
    for _ in range(3): eager()
    eager_rate = steps_per_second(eager)
    compiled = make_step(True, amp, a.mode)
    t = time.perf_counter()
    for _ in range(3): compiled()  # the first call compiles forward and backward; the next ones settle
    compile_s = time.perf_counter() - t
    compiled_rate = steps_per_second(compiled)
    saved = 1 / eager_rate - 1 / compiled_rate
    print(f"cnn, batch {BS}, amp={amp}, {torch.get_num_threads()} threads, torch.compile(mode={a.mode!r}):")
    print(f"  eager {eager_rate:.1f} steps/s; compiled {compiled_rate:.1f} steps/s; "
          f"first 3 compiled steps (compiling) {compile_s:.1f}s")
    finish(f"compile-{amp}", {"amp": amp, "mode": a.mode, "eager_steps_per_s": eager_rate,
                              "compiled_steps_per_s": compiled_rate, "compile_seconds": compile_s}, {})
    if saved <= 0:
        print(f"  compiled steps are not faster ({1000 * saved:+.2f} ms/step saved): torch.compile never pays here")
    else:
        print(f"  saves {1000 * saved:.2f} ms/step: pays after {compile_s / saved:,.0f} steps")
        for run, steps in RUNS.items():
            print(f"  {run}: {steps} steps, net {steps * saved - compile_s:+.1f}s")
