"""Sweeps shared by workers: two `mnist-lab sweep` processes in different folders on a real
PostgreSQL server (Debian's package, started on loopback for the test); a killed worker's trial resumed by another."""
import glob, json, os, secrets, shutil, socket, subprocess, sys, tempfile, time
from pathlib import Path
import pytest

MNIST_LAB = str(Path(sys.executable).parent / "mnist-lab")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def postgres_url():
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not bins:
        if os.environ.get("MNIST_LAB_REQUIRE_POSTGRES"): pytest.fail("PostgreSQL is not installed (apt-get install postgresql)")
        pytest.skip("needs PostgreSQL's server binaries (Debian: apt-get install postgresql)")
    pytest.importorskip("psycopg")  # psycopg 3: SQLAlchemy 2.1 reads postgresql:// URLs with it
    bin_dir = Path(bins[-1]).parent
    root = Path(tempfile.mkdtemp(prefix="mnist_lab_pg_"))
    as_user = []
    if os.geteuid() == 0:  # the server refuses to run as root: run it as Debian's postgres user
        root.chmod(0o755)
        shutil.chown(root, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = root / "data", free_port()
    # a password the URL leaves out, as README says: libpq takes it from PGPASSWORD (or ~/.pgpass), never from `ps`
    (root / "pw").write_text(password := secrets.token_hex(8))
    subprocess.run([*as_user, str(bin_dir / "initdb"), "-D", str(data), "-A", "scram-sha-256", "-U", "postgres",
                    "--pwfile", str(root / "pw")], check=True, capture_output=True)
    was, os.environ["PGPASSWORD"] = os.environ.get("PGPASSWORD"), password  # for the workers and sweeps it starts too
    subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-w", "-l", str(root / "log"), "-o",
                    f"-p {port} -k {root} -c listen_addresses=127.0.0.1", "start"], check=True, capture_output=True)
    try:
        subprocess.run([str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "optuna"],
                       check=True, capture_output=True)
        yield f"postgresql://postgres@127.0.0.1:{port}/optuna"  # as README writes it
    finally:
        subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
        if was is None: del os.environ["PGPASSWORD"]
        else: os.environ["PGPASSWORD"] = was


def wait_for(cond, timeout, what):
    deadline = time.time() + timeout
    while not cond():
        assert time.time() < deadline, what
        time.sleep(0.3)


def study_of(url, name):
    "The study, once the first worker has created it and stored its spec (None before)."
    import optuna
    try: study = optuna.load_study(study_name=name, storage=url)
    except Exception: return None
    return study if "spec" in study.user_attrs else None


def test_two_workers_in_different_folders_share_one_study(postgres_url, tmp_path):
    """A 3-point grid, cross-validated over 2 folds, on a PostgreSQL server: `mnist-lab sweep spec` in one folder,
    `mnist-lab sweep --join URL STUDY` in another. Every point completes exactly once (both its folds), both workers
    take part, and the runs table and the study agree (a trial's value is its folds' mean).
    (Local workers on one SQLite file: tests/test_cli_sweep.py.)"""
    import optuna
    from mnist_lab.runs import runs_table
    url = postgres_url
    base = {"dataset": "mnist_sample", "model": "mlp", "epochs": 1, "steps_per_epoch": 60, "tensorboard": False}
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(); b.mkdir()
    (a / "sweep.yaml").write_text(json.dumps({"space": {"lr": [1e-3, 1e-2, 3e-2]}, "params": base, "folds": 2,
                                              "sweep_dir": str(tmp_path / "sw"), "study_name": "shared",
                                              "storage": url}))
    first = subprocess.Popen([MNIST_LAB, "sweep", "sweep.yaml"], cwd=a, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)
    wait_for(lambda: first.poll() is not None or (tmp_path / "sw").is_dir() and study_of(url, "shared"), 120,
             "the first worker made no study")
    assert first.poll() is None, first.communicate()[0][-2000:]
    second = subprocess.run([MNIST_LAB, "sweep", "--join", url, "shared"], cwd=b, capture_output=True, text=True,
                            timeout=300)
    out = first.communicate(timeout=300)[0]
    assert first.returncode == 0 and second.returncode == 0, out[-2000:] + second.stdout[-2000:] + second.stderr[-2000:]
    study = optuna.load_study(study_name="shared", storage=url)
    # two workers that ask at the same moment for the last trial may make one more: it is pruned untrained
    surplus = [t for t in study.trials if t.user_attrs.get("surplus")]
    assert all(t.state.name == "PRUNED" and not t.params and t.number >= 3 for t in surplus), surplus
    trials = [t for t in study.trials if t not in surplus]
    assert sorted(t.number for t in trials) == list(range(3)), [(t.number, t.state) for t in trials]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert len({t.params["lr"] for t in trials}) == 3  # each point once
    assert len({t.user_attrs["worker"] for t in trials}) == 2  # both workers took part
    assert not (tmp_path / "sw" / "study.db").exists()  # the study lives on the server
    table = runs_table(tmp_path / "sw" / "trials")
    assert sorted(table.run) == sorted(f"{Path(t.user_attrs['run_dir']).name}/fold{i}" for t in trials for i in (0, 1))
    means = table.groupby("lr").best.mean()
    assert means.max() == pytest.approx(study.best_value) and means.idxmax() == study.best_params["lr"]
    assert not (a / "runs").exists() and not (b / "runs").exists()  # run folders went to the sweep's folder
    import contextlib, io, mnist_lab.cli  # its report: the folder has no study.db, the command names the database
    with contextlib.redirect_stderr(io.StringIO()) as err: assert mnist_lab.cli.main(["report", str(tmp_path / "sw")]) == 1
    assert "a sweep folder without study.db: name its study's database (--storage URL" in err.getvalue(), err.getvalue()
    assert mnist_lab.cli.main(["report", str(tmp_path / "sw"), "--storage", url, "--study", "shared"]) == 0
    assert "The best configuration against the second" in (tmp_path / "sw" / "report.html").read_text()
    from mnist_lab.sweep import read_only_storage  # the dashboard's storage: the server refuses its writes
    with pytest.raises(Exception) as refused:
        read_only_storage(url).create_new_study([optuna.study.StudyDirection.MAXIMIZE], "intruder")
    assert "read-only transaction" in f"{refused.value} {refused.value.__cause__}", refused.value
    assert "intruder" not in [s.study_name for s in optuna.get_all_study_summaries(url)]


def test_a_killed_worker_s_trial_is_resumed_by_another(tmp_path):
    """SIGKILL a worker mid-trial (in the first fold of a cross-validated trial): the next worker queues the trial again
    and resumes that fold from its checkpoint, then trains the second; the fold's weights equal an uninterrupted run's."""
    import optuna, torch
    import mnist_lab.record as R
    from mnist_lab.train import TrainConfig, fit
    base = {"dataset": "mnist_sample", "model": "cnn", "width": 8, "epochs": 6, "steps_per_epoch": 15,
            "scheduler": "none", "tensorboard": False, "threads": 1}
    (tmp_path / "sweep.yaml").write_text(json.dumps({"space": {"seed": [0]}, "params": base, "folds": 2,
                                                     "sweep_dir": str(tmp_path / "sw")}))
    worker = subprocess.Popen([MNIST_LAB, "sweep", "sweep.yaml"], cwd=tmp_path, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    run = tmp_path / "sw" / "trials" / "0000" / "fold0"  # a cross-validated trial: killed in its first fold
    wait_for(lambda: R.run_status(run).get("epoch", 0) >= 2, 120, "the trial did not train")
    worker.kill(); worker.wait()
    url = f"sqlite:///{tmp_path}/sw/study.db"
    r = subprocess.run([MNIST_LAB, "sweep", "--join", url, "sw"], cwd=tmp_path, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0 and "1 trials: 1 completed" in r.stdout, r.stdout + r.stderr
    trials = optuna.load_study(study_name="sw", storage=url).trials
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE"] and trials[1].system_attrs["failed_trial"] == 0
    log = (run / "train.log").read_text()
    assert "resuming" in log and "at epoch 0" not in log, log[-2000:]
    assert len(R.read_history(run)) == 6 and R.run_status(run.parent / "fold1")["status"] == "completed"
    again = fit(TrainConfig.from_params(**base, folds=2, fold=0, runs_root=str(tmp_path / "plain")))  # uninterrupted
    resumed = R.load_weights(run / "model.pt")
    assert all(torch.equal(v, resumed[k]) for k, v in again.model.state_dict().items())
