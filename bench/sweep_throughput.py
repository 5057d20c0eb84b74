"""Sweep throughput: the same 8-trial grid of papermill runs with 1 worker and with 2 workers.

    python bench/sweep_throughput.py [--repeat 3]   # trials/minute for each (median of the repeats), the speed-up

Each trial: the cnn for 2 epochs on the bundled sample (4,500 training digits). With n_jobs workers each
trial gets cores // n_jobs torch threads, so both settings use all cores."""
import argparse, os, shutil, statistics, tempfile, time
from pathlib import Path
from mnist_lab.sweep import sweep
from common import finish

SPACE = {"lr": [1e-3, 3e-3], "seed": [0, 1, 2, 3]}
PARAMS = {"dataset": "mnist_sample", "model": "cnn", "epochs": 2, "tensorboard": False}

if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3, help="sweeps per setting, alternating; medians are reported")
    a = ap.parse_args()
    walls = {1: [], 2: []}
    for _ in range(a.repeat):
        for n_jobs in walls:  # alternate, so a slow spell of the machine hits both settings
            d = Path(tempfile.mkdtemp())
            t = time.time()
            df = sweep(SPACE, d / "sweep", n_jobs=n_jobs, params=PARAMS)
            walls[n_jobs].append(time.time() - t)
            assert (df.status == "completed").all(), df[["run", "status", "error"]]
            shutil.rmtree(d)
    for n_jobs, w in walls.items():
        print(f"n_jobs={n_jobs}: {len(df)} trials in {statistics.median(w):.1f}s (median of "
              f"{', '.join(f'{x:.1f}' for x in w)}) = {60 * len(df) / statistics.median(w):.1f} trials/min")
    speedup = statistics.median(walls[1]) / statistics.median(walls[2])
    print(f"speed-up with 2 workers on {os.cpu_count()} cores: {speedup:.2f}x")
    finish("sweep_throughput", {"trials": len(df), "walls": walls, "speedup": speedup,
                                "trials_per_min": {n: 60 * len(df) / statistics.median(w) for n, w in walls.items()}},
           {"2 workers at least 1.5x the trials/min of 1": speedup >= 1.5})
