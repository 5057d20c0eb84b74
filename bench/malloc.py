"""Why the step benchmarks call `settle_malloc` (bench/common.py): page faults a training step takes, in fresh
processes that alternate.
- `fit` (2 epochs on the 10k real digits, time_to_98's recipe): faults and ms per step of its training epochs;
  glibc's malloc has raised its thresholds while the data loaded, so freed activations stay with the process.
- 140 steps of the default cnn as `fit` runs them (batch 128, channels_last, autocast as `amp=auto` picks, Adam),
  timed from the first step in a fresh process: with glibc's thresholds as they start, and settled as in `fit`.

    python bench/malloc.py [--rounds 3]

Medians over the rounds. Target: a step of `fit` takes under 100 page faults after its first epoch."""
import argparse, json, resource, statistics, subprocess, sys, tempfile, time, warnings
from pathlib import Path

faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def child(what: str) -> dict:
    "One measurement in this (fresh) process."
    import torch
    import mnist_lab.train as T
    if what == "fit":
        from common import MNIST10K
        epochs, train_epoch = [], T.train_epoch

        def timed(t, n):  # fit's own epochs, watched
            f0, t0 = faults(), time.perf_counter()
            out = train_epoch(t, n)
            epochs.append({"ms_per_step": (time.perf_counter() - t0) / n * 1e3, "faults_per_step": (faults() - f0) / n})
            return out
        T.train_epoch = timed
        T.fit(T.TrainConfig(dataset="mnist", data_dir=str(MNIST10K), download=False, epochs=2, tensorboard=False,
                            progress="none", runs_root=tempfile.mkdtemp()))
        return epochs[-1]
    from mnist_lab.model import make_model
    from common import settle_malloc, train_step
    if what == "steps settled": settle_malloc()
    torch.manual_seed(0)
    model = make_model("cnn").to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    x, y = torch.randn(128, 1, 28, 28).contiguous(memory_format=torch.channels_last), torch.randint(0, 10, (128,))
    bf16 = T.resolve_amp("auto", torch.device("cpu")) == "bf16"
    f0, t = faults(), time.perf_counter()
    for _ in range(140): train_step(model, opt, x, y, bf16)
    return {"ms_per_step": (time.perf_counter() - t) / 140 * 1e3, "faults_per_step": (faults() - f0) / 140}


WHAT = {"fit, second epoch": "fit", "steps, glibc's thresholds as they start": "steps", "steps, settled as in fit": "steps settled"}

if __name__ == "__main__":
    warnings.filterwarnings("ignore")
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--child", choices=list(WHAT.values()))
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(a.child)))
        sys.exit()
    from common import finish
    runs = {name: [] for name in WHAT}
    for r in range(a.rounds):
        for name, got in runs.items():
            out = subprocess.run([sys.executable, __file__, "--child", WHAT[name]], capture_output=True, text=True,
                                 check=True, cwd=Path(__file__).parent).stdout
            got.append(json.loads(out.splitlines()[-1]))
            print(f"round {r + 1}, {name}: {got[-1]['ms_per_step']:.2f} ms and {got[-1]['faults_per_step']:.0f} "
                  "page faults a step", flush=True)
    result = {name: {k: statistics.median(row[k] for row in rows) for k in rows[0]} for name, rows in runs.items()}
    result["rounds"] = a.rounds
    for name in WHAT: print(f"{name}: {result[name]['ms_per_step']:.2f} ms, {result[name]['faults_per_step']:.0f} page faults a step")
    finish("malloc", result, {"a step of fit takes under 100 page faults after its first epoch":
                              result["fit, second epoch"]["faults_per_step"] < 100})
