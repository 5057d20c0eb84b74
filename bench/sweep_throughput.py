"""Sweep throughput: the same 4-trial grid of papermill runs with 1 worker and with 2 workers.

    python bench/sweep_throughput.py            # prints trials/minute for each and the speed-up

Each trial: the cnn for 2 epochs on the bundled sample (4,500 training digits). With n_jobs workers each
trial gets cores // n_jobs torch threads, so both settings use all cores."""
import os, shutil, sys, tempfile, time
from pathlib import Path
from mnist_lab.sweep import sweep

SPACE = {"lr": [1e-3, 3e-3], "seed": [0, 1]}
PARAMS = {"dataset": "mnist_sample", "model": "cnn", "epochs": 2, "tensorboard": False}

if __name__ == "__main__":
    results = {}
    for n_jobs in (1, 2):
        d = Path(tempfile.mkdtemp())
        t = time.time()
        df = sweep(SPACE, d / "sweep", n_jobs=n_jobs, params=PARAMS)
        wall = time.time() - t
        assert (df.status == "completed").all(), df[["run", "status", "error"]]
        results[n_jobs] = wall
        print(f"n_jobs={n_jobs}: {len(df)} trials in {wall:.1f}s = {60 * len(df) / wall:.1f} trials/min "
              f"(mean in-kernel train time {df.seconds.mean():.1f}s per trial)")
        shutil.rmtree(d)
    print(f"speed-up with 2 workers on {os.cpu_count()} cores: {results[1] / results[2]:.2f}x")
