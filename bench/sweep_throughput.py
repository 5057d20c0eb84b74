"""Sweep throughput: the same 8-trial grid with each executor (in-process, papermill) and 1 or 2 workers.

    python bench/sweep_throughput.py [--repeat 3]   # trials/minute of each (median of the repeats), the ratios

Each trial: the cnn for 2 epochs on the bundled sample (4,500 training digits). With n_jobs workers each
trial gets cores // n_jobs torch threads, so every setting uses all cores. The four settings alternate, so a
slow spell of the machine hits all of them."""
import argparse, os, shutil, statistics, tempfile, time
from pathlib import Path
from mnist_lab.sweep import sweep
from common import finish

SPACE = {"lr": [1e-3, 3e-3], "seed": [0, 1, 2, 3]}
PARAMS = {"dataset": "mnist_sample", "model": "cnn", "epochs": 2, "tensorboard": False}
SETTINGS = [(e, n) for e in ("inprocess", "papermill") for n in (1, 2)]

if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3, help="sweeps per setting, alternating; medians are reported")
    a = ap.parse_args()
    # how well one trial uses a second thread bounds what 2 one-thread workers can gain over 1 two-thread worker
    import mnist_lab.train as T
    def trial_seconds(threads):
        return T.fit(T.TrainConfig(**PARAMS, threads=threads, progress="none",
                                   runs_root=tempfile.mkdtemp())).summary["train_seconds"]
    thread_s = {n: statistics.median(trial_seconds(n) for _ in range(3)) for n in (1, 2)}
    bound = 2 * thread_s[2] / thread_s[1]
    print(f"one trial trains in {thread_s[1]:.2f}s with 1 thread, {thread_s[2]:.2f}s with 2: in-process, 2 workers "
          f"can reach at most {bound:.2f}x the trials/min of 1 on 2 cores")
    walls = {s: [] for s in SETTINGS}
    for _ in range(a.repeat):
        for executor, n_jobs in SETTINGS:
            d = Path(tempfile.mkdtemp())
            t = time.time()
            df = sweep(SPACE, d / "sweep", n_jobs=n_jobs, params=PARAMS, executor=executor)
            walls[executor, n_jobs].append(time.time() - t)
            assert len(df) == 8 and (df.status == "completed").all(), df[["run", "status", "error"]]
            shutil.rmtree(d)
    per_min = {s: 60 * 8 / statistics.median(w) for s, w in walls.items()}
    for (executor, n_jobs), w in walls.items():
        print(f"{executor:>9}, n_jobs={n_jobs}: 8 trials in {statistics.median(w):.1f}s (median of "
              f"{', '.join(f'{x:.1f}' for x in w)}) = {per_min[executor, n_jobs]:.1f} trials/min")
    inproc = {n: per_min["inprocess", n] / per_min["papermill", n] for n in (1, 2)}
    workers = {e: per_min[e, 2] / per_min[e, 1] for e in ("inprocess", "papermill")}
    for n, r in inproc.items(): print(f"in-process / papermill with {n} worker(s): {r:.2f}x")
    for e, r in workers.items(): print(f"2 workers / 1 worker, {e}, on {os.cpu_count()} cores: {r:.2f}x")
    finish("sweep_throughput", {"trials": 8, "walls": {f"{e}-{n}": w for (e, n), w in walls.items()},
                                "trials_per_min": {f"{e}-{n}": v for (e, n), v in per_min.items()},
                                "inprocess_over_papermill": inproc, "two_over_one_worker": workers,
                                "trial_train_seconds_by_threads": thread_s, "inprocess_two_worker_bound": bound},
           {"in-process at least 2x the trials/min of papermill (1 worker)": inproc[1] >= 2,
            "in-process at least 2x the trials/min of papermill (2 workers)": inproc[2] >= 2,
            "2 workers at least 1.7x the trials/min of 1 (papermill)": workers["papermill"] >= 1.7,
            "2 workers at least 1.7x the trials/min of 1 (in-process)": workers["inprocess"] >= 1.7})
