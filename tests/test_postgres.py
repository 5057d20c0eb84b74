"""An Optuna study on a real PostgreSQL server (Debian's package, started on loopback for the test) shared by
two worker processes: every trial runs once, none is lost, and both workers take part."""
import glob, os, shutil, socket, subprocess, tempfile
from pathlib import Path
import pytest


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
    pytest.importorskip("psycopg2")
    bin_dir = Path(bins[-1]).parent
    root = Path(tempfile.mkdtemp(prefix="mnist_lab_pg_"))
    as_user = []
    if os.geteuid() == 0:  # the server refuses to run as root: run it as Debian's postgres user
        root.chmod(0o755)
        shutil.chown(root, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = root / "data", free_port()
    subprocess.run([*as_user, str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"],
                   check=True, capture_output=True)
    subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-w", "-l", str(root / "log"), "-o",
                    f"-p {port} -k {root} -c listen_addresses=127.0.0.1", "start"], check=True, capture_output=True)
    try:
        subprocess.run([str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "optuna"],
                       check=True, capture_output=True)
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/optuna"
    finally:
        subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def test_two_workers_share_one_postgres_study(postgres_url, tmp_path):
    import optuna
    from mnist_lab.sweep import optuna_search
    study = optuna_search({"lr": {"low": 1e-3, "high": 3e-2, "log": True}}, tmp_path / "search", n_trials=6, n_jobs=2,
                          storage=postgres_url, study_name="shared", pruner="none",
                          params={"dataset": "mnist_sample", "model": "linear", "epochs": 1, "steps_per_epoch": 5,
                                  "tensorboard": False})
    trials = study.trials
    assert not (tmp_path / "search" / "study.db").exists()  # the study lives in PostgreSQL
    # MaxTrialsCallback may let a second worker finish the trial it had started: 6 or 7 trials
    assert 6 <= len(trials) <= 7 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert sorted(t.number for t in trials) == list(range(len(trials)))  # no duplicated or missing numbers
    run_dirs = [t.user_attrs["run_dir"] for t in trials]
    assert len(set(run_dirs)) == len(trials) and all(Path(d, "summary.json").is_file() for d in run_dirs)
    assert sorted(p.name for p in (tmp_path / "search" / "trials").iterdir()) == sorted(Path(d).name for d in run_dirs)
    assert len({t.user_attrs["worker"] for t in trials}) == 2  # both workers ran trials
