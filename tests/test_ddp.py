"""DistributedDataParallel on this machine: 2 CPU processes on the gloo backend, started by torchrun."""
import json, os, signal, subprocess, sys, time
from pathlib import Path
import pytest
import torch

pytestmark = pytest.mark.xdist_group("many_processes")  # see conftest.py

BIN = Path(sys.executable).parent
BASE = ["-p", "dataset", "mnist_sample", "-p", "epochs", "3", "-p", "threads", "1", "-p", "dropout", "0.1",
        "-p", "tensorboard", "False"]


def torchrun(*args, cwd, **kw):
    return subprocess.Popen([str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", "--no-python",
                             str(BIN / "mnist-lab"), "fit", *BASE, *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, **kw)


def finished(p) -> str:
    out = p.communicate(timeout=300)[0]
    assert p.returncode == 0, out[-3000:]
    return out


def summary(run: Path) -> dict: return json.loads((run / "summary.json").read_text())


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory) -> tuple:
    "One uninterrupted 2-process run (its folder, torchrun's output): compared with one process, and with a resume."
    d = tmp_path_factory.mktemp("ddp")
    out = finished(torchrun("-p", "name", "ddp", cwd=d))
    (run,) = (d / "runs" / "ddp").iterdir()  # one run folder, written by rank 0 alone
    return run, out


def test_ddp_matches_single_process_and_only_rank_0_writes(tmp_path, ddp_run):
    single = subprocess.run([str(BIN / "mnist-lab"), "fit", *BASE, "-p", "name", "single"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-2000:]
    run, out = ddp_run
    assert out.count("test accuracy") == 1  # one voice
    (ref,) = (tmp_path / "runs" / "single").iterdir()
    s, r = summary(run), summary(ref)
    assert s["processes"] == 2 and r["processes"] == 1 and s["steps"] == r["steps"]
    assert s["test_accuracy"] >= r["test_accuracy"] - 0.015, (s["test_accuracy"], r["test_accuracy"])
    assert json.loads((run / "status.json").read_text())["status"] == "completed"


def test_ddp_resume_after_kill_is_exact(tmp_path, ddp_run):
    p = torchrun("-p", "run_dir", "runs/victim", cwd=tmp_path)
    victim = tmp_path / "runs" / "victim"
    deadline = time.time() + 120
    while not (victim / "last.pt").exists():
        assert time.time() < deadline and p.poll() is None, "no checkpoint before the run ended"
        time.sleep(0.05)
    from mnist_lab.process import children
    workers = children(p.pid)  # torchrun starts each worker in a session of its own
    assert len(workers) == 2
    for pid in (*workers, p.pid): os.kill(pid, signal.SIGKILL)  # both workers and torchrun, at once
    p.communicate()
    assert not (victim / "summary.json").exists()
    # a run trained by 2 processes resumes with 2: one process is refused before it touches the folder
    r = subprocess.run([str(BIN / "mnist-lab"), "fit", "-p", "resume", "runs/victim"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "trained by 2 process(es); resume it with the same number, not 1" in r.stderr
    finished(torchrun("-p", "resume", "runs/victim", cwd=tmp_path))
    a = torch.load(victim / "model.pt", weights_only=True)
    b = torch.load(ddp_run[0] / "model.pt", weights_only=True)  # the uninterrupted run, same config
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows = lambda d: [{k: v for k, v in json.loads(l).items() if k != "epoch_time"} for l in (d / "metrics.jsonl").read_text().splitlines()]
    assert rows(victim) == rows(ddp_run[0])


def test_stale_torchrun_variables_fail_with_a_message_not_a_hang(tmp_path):
    import socket
    with socket.socket() as s: s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]  # nobody listens there
    env = {**os.environ, "WORLD_SIZE": "2", "RANK": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
           "MNIST_LAB_DIST_TIMEOUT": "3"}
    t0 = time.time()
    r = subprocess.run([str(BIN / "mnist-lab"), "fit", *BASE], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 1 and "could not join the torchrun job" in r.stderr and "unset WORLD_SIZE" in r.stderr, r.stderr
    assert time.time() - t0 < 60 and not (tmp_path / "runs").exists()
