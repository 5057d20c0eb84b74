"""Detached runs from the shell: `mnist-lab train --detach`, `watch`, `stop`, then `resume`; offline downloads;
the project's runs root; what the headline papermill command says in the terminal."""
import json, os, signal, subprocess, sys, time
from pathlib import Path
import pytest
from dataclasses import fields
from conftest import papermill, pace_plugin
from mnist_lab.train import TrainConfig
import mnist_lab.record as R

MNIST_LAB = str(Path(sys.executable).parent / "mnist-lab")


def slow(folder, epochs=30) -> list:
    "`-p` arguments of a run that takes about 0.5 s of wall time an epoch on any machine, at little CPU (`pace`)."
    params = {"dataset": "mnist_sample", "model": "linear", "epochs": epochs, "steps_per_epoch": 10,
              "scheduler": "none", "tensorboard": False, "plugins": pace_plugin(folder, 0.05), "augment": "pace"}
    return [a for k, v in params.items() for a in ("-p", k, str(v))]


def cli(*args, cwd, timeout=300, env=None):
    return subprocess.run([MNIST_LAB, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def test_detach_watch_stop_resume(tmp_path):
    r = cli("train", "--detach", *slow(tmp_path), "--name", "bg", cwd=tmp_path, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    (run,) = (tmp_path / "runs" / "bg").iterdir()
    assert f"run folder: {run}" in r.stdout and f"mnist-lab stop {run}" in r.stdout
    deadline = time.time() + 120
    while time.time() < deadline:  # the command has returned; the run goes on without it
        s = json.loads((run / "status.json").read_text()) if (run / "status.json").is_file() and \
            (run / "status.json").stat().st_size else {}
        if s.get("epoch", 0) >= 2: break
        time.sleep(0.3)
    else: pytest.fail(f"the detached run did not train: {(run / 'papermill.log').read_text()[-2000:]}")
    nb = json.loads((run / "notebook.ipynb").read_text())  # what was given is injected; the parameters cell holds
    injected = next(c for c in nb["cells"] if "injected-parameters" in c["metadata"].get("tags", []))  # the rest,
    lines = [l for l in "".join(injected["source"]).splitlines() if " = " in l]  # which the kernel checks are the
    assert "epochs = 30" in lines and any(l.startswith("run_dir = ") for l in lines)  # defaults (a saved edit: refused)
    assert len(lines) < len(fields(TrainConfig)), lines
    r = cli("runs", cwd=tmp_path)
    assert "running" in r.stdout and "/30" in r.stdout, r.stdout  # live runs show their progress
    r = cli("stop", str(run), cwd=tmp_path, timeout=120)
    assert r.returncode == 0 and "stopped (KeyboardInterrupt)" in r.stdout and "resume" in r.stdout, r.stdout + r.stderr
    s = json.loads((run / "status.json").read_text())
    assert 2 <= s["epoch"] < 30 and (run / "last.pt").is_file()
    r = cli("stop", str(run), cwd=tmp_path)
    assert r.returncode == 0 and r.stdout == f"{run}: stopped, not running: nothing to stop\n", r.stdout
    notebooks = sorted(p.name for p in run.glob("notebook*.ipynb"))
    r = cli("resume", str(run), cwd=tmp_path)  # its plugins not named: refused before a kernel starts, nothing left
    assert r.returncode == 1 and "trained with plugins=" in r.stderr and "starting a kernel" not in r.stdout, r.stderr
    assert sorted(p.name for p in run.glob("notebook*.ipynb")) == notebooks
    r = cli("resume", "--detach", str(run), "-p", "plugins", str(tmp_path / "pace.py"), cwd=tmp_path,  # a run's
            env={**os.environ, "PACE_S": "0"})  # plugins are imported only when named again; the rest at full speed
    assert r.returncode == 0 and f"mnist-lab watch {run}" in r.stdout, r.stderr[-2000:]  # returned at once
    r = cli("watch", str(run), cwd=tmp_path)
    assert r.returncode == 0 and "completed: epoch 30/30" in r.stdout, r.stdout


def test_offline_download_is_tried_once_and_leaves_no_folders(tmp_path, monkeypatch, capsys):
    import torchvision
    import mnist_lab.data as D
    class Offline:  # torchvision's MNIST on a machine with no internet: it makes its folders, then fails
        resources = torchvision.datasets.MNIST.resources
        def __init__(self, root, train, download):
            Path(root, "MNIST", "raw").mkdir(parents=True, exist_ok=True)
            raise RuntimeError("Error downloading train-images-idx3-ubyte.gz: Name or service not known")
    monkeypatch.setattr(torchvision.datasets, "MNIST", Offline)
    monkeypatch.chdir(tmp_path)  # no project here: the default data_dir is tmp_path/data
    data_dir = tmp_path / "data"
    assert D.load_data("auto").name == "mnist_sample"
    assert "copy the four IDX files" in capsys.readouterr().out
    assert not data_dir.exists() and D.failure_note("mnist").is_file()
    assert D.download_failed_recently("fashion_mnist") is None  # remembered per dataset
    def no_download(*a, **k): raise AssertionError("a download was tried again")
    monkeypatch.setattr(D, "download_idx", no_download)
    assert D.load_data("auto").name == "mnist_sample"
    assert "no download tried" in capsys.readouterr().out
    with pytest.raises(FileNotFoundError, match="stands in only for the default data_dir"):  # a folder you name: no sample
        D.load_data("auto", tmp_path / "elsewhere")
    assert D.load_data("auto", data_dir).name == "mnist_sample"  # the default one, however written
    with pytest.raises(FileNotFoundError, match="no download tried"):
        D.load_data("mnist", data_dir)
    assert not data_dir.exists()
    # under papermill the fallback is said once, in the terminal too, as a line (no warning quoting source code)
    r = papermill(tmp_path / "out.ipynb", ("model", "linear"), ("epochs", 1),
                  ("tensorboard", False), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count("USING THE BUNDLED SAMPLE") == 1  # a warning would quote its source line: twice
    outputs = json.dumps([c.get("outputs", []) for c in json.loads((tmp_path / "out.ipynb").read_text())["cells"]])
    assert outputs.count("USING THE BUNDLED SAMPLE") == 1


from mnist_lab.process import alive as running  # exists and is not a zombie


def test_a_killed_foreground_command_leaves_nothing_training(tmp_path):
    """SIGKILL or SIGTERM of a foreground `mnist-lab train`, SIGKILL of `mnist-lab sweep`: papermill and its kernel
    end too (the parent-death signal), the run is recorded as failed, its last checkpoint is whole."""
    endless = slow(tmp_path, epochs=1000)  # still training when the command is killed
    params = dict(zip(endless[1::3], endless[2::3]))  # -p NAME VALUE triples
    (tmp_path / "sweep.yaml").write_text(json.dumps({"space": {"seed": [0]}, "params": params, "n_jobs": 1,
                                                     "executor": "papermill",
                                                     "sweep_dir": str(tmp_path / "runs" / "sweep")}))
    commands = {"kill": (["train", *endless, "--name", "kill"], signal.SIGKILL),
                "term": (["train", *endless, "--name", "term"], signal.SIGTERM),
                "sweep": (["sweep", "sweep.yaml"], signal.SIGKILL)}
    procs = {k: subprocess.Popen([MNIST_LAB, *args], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 text=True) for k, (args, _) in commands.items()}
    run = lambda k: next(p.parent for p in (tmp_path / "runs" / k).rglob("status.json"))
    started = lambda k: any((tmp_path / "runs" / k).rglob("status.json")) and R.run_status(run(k)).get("epoch", 0) >= 1
    deadline = time.time() + 180
    while not all(started(k) for k in commands):
        ended = {k: p.poll() for k, p in procs.items() if p.poll() is not None}
        assert not ended and time.time() < deadline, {k: procs[k].communicate()[0][-1500:] for k in ended}
        time.sleep(0.3)
    kernels = {k: R.run_status(run(k))["pid"] for k in commands}
    for k, p in procs.items(): p.send_signal(commands[k][1])
    for p in procs.values(): p.wait(60)
    assert procs["term"].returncode == 130  # as Ctrl-C
    deadline = time.time() + 30
    while any(running(k) for k in kernels.values()) and time.time() < deadline: time.sleep(0.2)
    assert not any(running(k) for k in kernels.values()), "a kernel trains on without its command"
    leftovers = subprocess.run(["pgrep", "-f", str(tmp_path / "runs")], capture_output=True, text=True).stdout
    assert not leftovers.strip(), leftovers  # no papermill either
    for k, expected in (("kill", "failed"), ("term", "stopped"), ("sweep", "failed")):  # SIGTERM is a Ctrl-C
        assert R.run_status(run(k))["status"] == expected, (k, R.run_status(run(k)))
        assert R.load_checkpoint(run(k) / "last.pt")["state"]["epoch"] >= 1
    assert "KeyboardInterrupt" in R.run_status(run("term"))["error"]


def test_stop_signals_only_the_runs_own_process(tmp_path):
    """A status.json that names -1, 0, a huge number or another live process of ours (a stale or hostile file):
    `mnist-lab stop` signals nothing, says why, and the other process lives on."""
    import socket
    victim = subprocess.Popen(["sleep", "60"])
    run = tmp_path / "runs" / "x"
    run.mkdir(parents=True)
    try:
        for pid in (-1, 0, 2**70, victim.pid):
            (run / "status.json").write_text(json.dumps({"status": "running", "pid": pid, "host": socket.gethostname(),
                                                         "updated": time.time(), "started": time.time()}))
            r = cli("stop", str(run), cwd=tmp_path)
            said = r.stdout + r.stderr
            assert "not signalled" in said or "not running: nothing to stop" in said, (pid, said)
            assert victim.poll() is None, f"pid {pid} in status.json got another process signalled"
        # the victim is alive and named, but does not hold the run's lock (here: a lock held by a stranger)
        holder = subprocess.Popen([sys.executable, "-c", f"import fcntl, os, time; fd = os.open({str(run / '.lock')!r}, "
                                   "os.O_RDWR | os.O_CREAT); fcntl.flock(fd, fcntl.LOCK_EX); print('ok', flush=True); "
                                   "time.sleep(60)"], stdout=subprocess.PIPE, text=True)
        assert holder.stdout.readline().strip() == "ok"
        r = cli("stop", str(run), cwd=tmp_path)
        assert r.returncode == 1 and "does not hold the run's lock" in r.stderr, r.stderr
        assert victim.poll() is None and holder.poll() is None
        holder.kill()
        # a run not training, whose launcher.json names a live session of ours whose command even names a notebook
        # in this folder: the record is exact (pid, start time), but it is not mnist_lab's papermill: left alone
        from mnist_lab.process import identity
        leader = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", str(run / "view.ipynb")],
                                  start_new_session=True)
        (run / "status.json").write_text(json.dumps({"status": "stopped", "host": socket.gethostname()}))
        (run / "launcher.json").write_text(json.dumps(identity(leader.pid)))
        r = cli("stop", str(run), cwd=tmp_path)
        assert r.returncode == 0 and "not running: nothing to stop" in r.stdout, r.stdout + r.stderr
        assert leader.poll() is None, "launcher.json got another process group signalled"
        leader.kill()
    finally: victim.kill()


def test_stop_right_after_detach_stops_the_launched_run(tmp_path):
    "`mnist-lab stop` before the kernel has begun training ends papermill and its kernel (launcher.json, verified)."
    r = cli("train", "--detach", *slow(tmp_path), "--name", "early", cwd=tmp_path, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    (run,) = (tmp_path / "runs" / "early").iterdir()
    r = cli("stop", str(run), cwd=tmp_path, timeout=120)
    assert r.returncode == 0 and "stopped" in r.stdout, r.stdout + r.stderr
    deadline = time.time() + 30
    while time.time() < deadline and subprocess.run(["pgrep", "-f", str(run)], capture_output=True).stdout:
        time.sleep(0.3)
    assert not subprocess.run(["pgrep", "-f", str(run)], capture_output=True, text=True).stdout, "still running"
    s = R.run_status(run)
    assert s["status"] in ("stopped", "failed") and not (run / "model.pt").exists(), s


def test_train_in_the_foreground_refuses_before_work(tmp_path):
    """`mnist-lab train` into a run_dir that holds a run is refused before anything starts; so is a data folder that
    is not there (`missing_data`): one line naming the folder, and no run folder. (Its lines in the terminal and its
    papermill.log: tests/test_cli_sweep.py::test_train_runs_eval_resume.)"""
    (tmp_path / "runs" / "exact").mkdir(parents=True)
    (tmp_path / "runs" / "exact" / "status.json").write_text("{}")
    r = cli("train", "-p", "run_dir", "runs/exact", cwd=tmp_path)
    assert r.returncode == 1 and "already holds a run" in r.stderr
    missing = tmp_path / "no-such-images"
    r = cli("train", "-p", "dataset", "image_folder", "-p", "data_dir", str(missing), "--name", "bad", cwd=tmp_path)
    said = [l for l in r.stderr.splitlines() if l.strip()]
    assert r.returncode == 1 and len(said) == 1 and str(missing) in said[0], r.stderr
    assert said[0].startswith("mnist-lab train: error: dataset='image_folder': no folder"), said
    assert not (tmp_path / "runs" / "bad").exists()  # refused before a folder, so before papermill started


def test_a_signal_in_the_first_seconds_of_train_stops_it(tmp_path):
    """SIGTERM to `mnist-lab train` 2 s after it starts, while papermill and its kernel are still starting: the
    command ends as after Ctrl-C, nothing trains on, and a run that never began leaves no folder."""
    p = subprocess.Popen([MNIST_LAB, "train", *slow(tmp_path), "--name", "early"], cwd=tmp_path,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(2)
    p.send_signal(signal.SIGTERM)
    out = p.communicate(timeout=60)[0]
    assert p.returncode == 130, out
    deadline = time.time() + 15
    while time.time() < deadline and subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True).stdout:
        time.sleep(0.3)
    assert not subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True).stdout, "trains on"
    runs = list((tmp_path / "runs" / "early").iterdir()) if (tmp_path / "runs" / "early").exists() else []
    assert not runs or R.run_status(runs[0])["status"] == "stopped", (runs, out)


def test_say_in_a_headless_kernel_reaches_its_terminal_and_no_file_it_was_redirected_to(tmp_path):
    """`say` in a papermill kernel prints to the notebook and to papermill's terminal, but not while stdout is
    redirected (a sweep's in-process trial writes its own train.log); once that log is closed, its descriptor is
    reused by another file, into which nothing of `say` may go (a sweep's trials failed with EINVAL on it)."""
    import nbformat
    code = ("import contextlib\nfrom mnist_lab.process import say\n"
            "with open('trial.log', 'w') as log, contextlib.redirect_stdout(log): say('inside the trial')\n"
            "other = open('other.txt', 'w')  # takes the descriptor the log had\n"
            "say('after the trial')\nother.close()")
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)],
                                            metadata={"kernelspec": {"name": "python3", "display_name": "python3",
                                                                     "language": "python"}}), tmp_path / "say.ipynb")
    r = papermill(tmp_path / "out.ipynb", cwd=tmp_path, nb=tmp_path / "say.ipynb", timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count("after the trial") == 1 and "inside the trial" not in r.stdout, r.stdout
    assert (tmp_path / "trial.log").read_text() == "inside the trial\n" and (tmp_path / "other.txt").read_text() == ""
