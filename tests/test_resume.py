"""Kill a training process with SIGKILL at exact points, resume it, and compare with a run that was never
interrupted: the final weights must be bitwise equal (torch.equal) and the metrics identical.

The kills are real SIGKILLs sent by the training process to itself at a chosen optimizer step (or in the
middle of writing a checkpoint), so each kill point is exact and the test is repeatable. The training processes
fork from the test's own (torch imported once); one test trains in a fresh interpreter."""
import io, json, os, signal, subprocess, sys, tempfile
from pathlib import Path
import pytest
import torch
from conftest import in_child, exit_codes

# a small run that still uses every source of randomness: dropout (torch RNG), augmentation and batch
# order (the sampler's generator), a per-step scheduler (onecycle) and Adam's state
CONFIG = dict(dataset="mnist_sample", model="mlp", fc1=64, fc2=32, dropout=0.2, batch_size=32, accumulate=2,
              grad_clip=1.0, steps_per_epoch=8, epochs=4, augment="shift,noise", scheduler="onecycle", lr=3e-3,
              tensorboard=True, progress="none", threads=1)
BATCHES = CONFIG["accumulate"]  # batches drawn per optimizer step: the kill points below count batches

def patched_fit(opts: dict):
    "Train `opts['config']` in this process, SIGKILLing itself where `opts` says (a forked child runs this)."
    import mnist_lab.data, mnist_lab.record, mnist_lab.train as T
    if opts.get("kill_at_step") is not None:  # SIGKILL ourselves when asked for batch number kill_at_step + 1
        nxt, calls = mnist_lab.data.BatchSampler.__next__, [0]
        def counting_next(self):
            calls[0] += 1
            if calls[0] == opts["kill_at_step"] + 1: os.kill(os.getpid(), signal.SIGKILL)
            return nxt(self)
        mnist_lab.data.BatchSampler.__next__ = counting_next
    if opts.get("kill_in_save") is not None:  # SIGKILL halfway through writing checkpoint number kill_in_save
        saves, real_save = [0], T.save_checkpoint
        def dying_save(obj, path):
            saves[0] += 1
            if saves[0] != opts["kill_in_save"]: return real_save(obj, path)
            def half_then_die(f):
                buf = io.BytesIO(); torch.save(obj, buf)
                f.write(buf.getvalue()[: len(buf.getvalue()) // 2]); f.flush(); os.kill(os.getpid(), signal.SIGKILL)
            mnist_lab.record.save_atomic(half_then_die, path)
        T.save_checkpoint = dying_save
    if opts.get("no_rng_restore"): T.set_rng_state = lambda s: None  # a deliberately incomplete resume
    T.fit(T.TrainConfig(**opts["config"]))


def fit_process(config: dict, **opts) -> tuple:
    """`patched_fit` in a child forked from this process (torch is imported already: no 2 s start; the
    patches stay in the child): its exit code (-9 for a SIGKILL) and its error, if any."""
    import torch._dynamo, torch.utils.tensorboard  # noqa: F401 (fit imports them): the children fork with them
    err = Path(tempfile.mkdtemp()) / "error"
    code = exit_codes([in_child(lambda: patched_fit({"config": config, **opts}), err)], timeout=300)[0]
    return code, err.read_text() if err.exists() else ""


def outcome(run_dir) -> dict:
    "What must not depend on interruptions: final weights, per-epoch metrics (minus timings), test metrics."
    metrics = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for m in metrics: m.pop("epoch_time")
    summary = json.loads((run_dir / "summary.json").read_text())
    return {"weights": torch.load(run_dir / "model.pt", weights_only=True), "metrics": metrics,
            "test": {k: v for k, v in summary.items() if k.startswith("test_")}}


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    d = tmp_path_factory.mktemp("ref")
    code, err = fit_process({**CONFIG, "run_dir": str(d / "runs" / "ref"), "runs_root": str(d / "runs")})
    assert code == 0, err
    return outcome(d / "runs" / "ref")


def killed_then_resumed(tmp_path, **kill) -> dict:
    run_dir = tmp_path / "runs" / "victim"
    cfg = {**CONFIG, "run_dir": str(run_dir), "runs_root": str(tmp_path / "runs")}
    code, err = fit_process(cfg, **{k: v for k, v in kill.items() if k != "no_rng_restore"})
    assert code == -signal.SIGKILL, f"expected a SIGKILL, got {code}: {err}"
    assert json.loads((run_dir / "status.json").read_text())["status"] == "running"  # the kill left it so
    from mnist_lab.record import run_status
    assert run_status(run_dir)["status"] == "failed" and run_status(run_dir)["killed"]
    assert not (run_dir / "summary.json").exists()
    code, err = fit_process({"resume": str(run_dir), "runs_root": str(tmp_path / "runs"), "progress": "none"},
                            no_rng_restore=kill.get("no_rng_restore", False))
    assert code == 0, err
    assert run_status(run_dir)["status"] == "completed"
    return outcome(run_dir)


@pytest.mark.parametrize("kill", [
    {"kill_at_step": 3 * BATCHES},  # epoch 1, before the first checkpoint: the same folder starts over
    {"kill_at_step": 13 * BATCHES + 1},  # mid epoch 2, between the two batches of one step
    {"kill_at_step": 24 * BATCHES},  # just after the epoch-3 checkpoint, before epoch 4's first step
    {"kill_in_save": 4},    # halfway through writing a checkpoint (epoch 2's last.pt)
], ids=lambda k: "-".join(f"{a}={b}" for a, b in k.items()))
def test_kill_and_resume_is_bitwise_identical(tmp_path, uninterrupted, kill):
    resumed = killed_then_resumed(tmp_path, **kill)
    assert same_weights(resumed["weights"], uninterrupted["weights"])
    assert resumed["metrics"] == uninterrupted["metrics"]
    assert resumed["test"] == uninterrupted["test"]


def test_the_check_bites_when_rng_state_is_not_restored(tmp_path, uninterrupted):
    "Prove the test above can fail: a resume that skips the RNG restore must give different weights."
    resumed = killed_then_resumed(tmp_path, kill_at_step=13 * BATCHES, no_rng_restore=True)
    assert not same_weights(resumed["weights"], uninterrupted["weights"])


def test_same_seed_same_run(tmp_path, uninterrupted):
    "A fresh interpreter (nothing inherited from this one) trains the same config to the same weights."
    config = {**CONFIG, "run_dir": str(tmp_path / "runs" / "again"), "runs_root": str(tmp_path / "runs")}
    code = "import json, sys; import mnist_lab.train as T; T.fit(T.TrainConfig(**json.loads(sys.argv[1])))"
    p = subprocess.run([sys.executable, "-c", code, json.dumps(config)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    again = outcome(tmp_path / "runs" / "again")
    assert same_weights(again["weights"], uninterrupted["weights"]) and again["metrics"] == uninterrupted["metrics"]
