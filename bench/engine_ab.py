"""A/B of two checkouts of mnist_lab on the same machine, alternating, so a slow spell hits both: `fit` on the
10k real digits (2 epochs, seeds 0 1 2: training seconds and test accuracy) and the data pipeline's rate.

    git worktree add /tmp/old 705226c          # the engine before the refactor
    python bench/engine_ab.py /tmp/old [--rounds 2]

Target: a refactor changes nothing measurable: the same accuracies, and the new median training time within
5% of the old one."""
import argparse, contextlib, io, json, statistics, subprocess, sys, tempfile, warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent


def one(repo: str) -> dict:
    "Measure the mnist_lab found in `repo` (run in a fresh process per checkout)."
    warnings.filterwarnings("ignore")
    sys.path[:0] = [repo, str(HERE)]
    import mnist_lab.train as T
    import data_pipeline as dp
    assert T.__file__.startswith(repo), T.__file__
    runs = []
    # the same model on both sides: the cnn that pools after the ReLU, which checkouts from before pool_first was
    # a parameter (its default now) train
    same = {"pool_first": False} if "pool_first" in T.TrainConfig.__dataclass_fields__ else {}
    for seed in (0, 1, 2):
        with contextlib.redirect_stdout(io.StringIO()):
            s = T.fit(T.TrainConfig(dataset="mnist", data_dir=str(dp.MNIST10K), download=False, epochs=2, seed=seed,
                                    tensorboard=False, progress="none", runs_root=tempfile.mkdtemp(), **same)).summary
        runs.append((s["train_seconds"], s["test_accuracy"]))
    return {"train_seconds": [r[0] for r in runs], "test_accuracy": [r[1] for r in runs],
            "images_per_s": dp.rate(dp.mnist_lab_batches())}


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("old", help="a checkout (git worktree) of the older mnist_lab")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--one", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one: print(json.dumps(one(a.one))); sys.exit()
    from common import finish
    repos = {"old": str(Path(a.old).resolve()), "new": str(HERE.parent)}
    res = {k: [] for k in repos}
    for _ in range(a.rounds):
        for k, repo in repos.items():
            out = subprocess.run([sys.executable, __file__, a.old, "--one", repo], capture_output=True, text=True,
                                 check=True).stdout
            res[k].append(json.loads(out.strip().splitlines()[-1]))
            print(k, res[k][-1], flush=True)
    med = {k: statistics.median(t for r in rs for t in r["train_seconds"]) for k, rs in res.items()}
    rate = {k: statistics.median(r["images_per_s"] for r in rs) for k, rs in res.items()}
    print(f"median training seconds: old {med['old']:.2f}, new {med['new']:.2f}; "
          f"images/s: old {rate['old']:,.0f}, new {rate['new']:,.0f}")
    finish("engine_ab", {"old": a.old, "runs": res, "train_seconds_median": med, "images_per_s_median": rate},
           {"the same test accuracies": all(r["test_accuracy"] == res["old"][0]["test_accuracy"]
                                            for rs in res.values() for r in rs),
            "new median training time within 5% of the old": med["new"] <= 1.05 * med["old"]})
