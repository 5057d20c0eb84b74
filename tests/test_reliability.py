"""Reliability and security with real faults: killed writers, full disks, read-only folders, damaged and
malicious checkpoints, bad parameters, escaping paths, corrupt datasets, concurrent runs, dead kernels.
The numbered cases follow the reliability issue; resume-after-kill (2), same-seed runs (3), NaN loss (11)
and sys.exit/KeyboardInterrupt (14) live in test_resume.py and test_engine.py."""
import functools, gzip, itertools, http.server, json, os, random, re, signal, struct, subprocess, sys, threading, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
import pytest
import torch
import mnist_lab
import mnist_lab.train as T, mnist_lab.record as R
from mnist_lab.data import load_data, IDX_STEMS
from conftest import ROOT, papermill, pace_plugin, in_child, exit_codes
from mnist_lab.process import lock_held, wait_until

TINY = dict(epochs=2, dataset="mnist_sample", model="linear", batch_size=100, steps_per_epoch=2, scheduler="none",
            tensorboard=False, progress="none")
BIG = {"w": torch.randn(1_000_000)}  # a 4 MB checkpoint: writing it takes long enough to be killed inside


def run_py(code: str, *args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                          timeout=120, **kw)


# 1. SIGKILL while a checkpoint is being written, 20 times: the file on disk is always a readable checkpoint

def ready_child(fn, errors: Path) -> int:
    """`in_child(fn)`, where `fn(ready)` calls `ready()` once set up; returns the child's pid when it has (and
    fails, with the child's traceback, if it ended before)."""
    r, w = os.pipe()
    pid = in_child(lambda: (os.close(r), fn(lambda: os.write(w, b"r"))), errors)
    os.close(w)
    got = os.read(r, 1)
    os.close(r)
    assert got == b"r", errors.read_text() if errors.exists() else "the child ended before it was ready"
    return pid


def fork_writer(path) -> int:
    "A forked child (torch is imported already: no 2 s start) that saves checkpoints until killed."
    def save_until_killed(ready):
        ready()
        for i in itertools.count(1):
            R.save_checkpoint({"model": {"w": torch.full((1_000_000,), float(i))}, "step": i}, path)
    return ready_child(save_until_killed, path.parent / "writer-error")


def test_sigkill_during_checkpoint_writes_never_leaves_an_unreadable_file(tmp_path):
    path, rng, steps = tmp_path / "last.pt", random.Random(0), []
    R.save_checkpoint({"model": {"w": torch.zeros(1_000_000)}, "step": 0}, path)
    for _ in range(20):
        pid = fork_writer(path)
        time.sleep(rng.uniform(0.0, 0.3))  # lands inside torch.save, fsync or rename, or between them
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        ckpt = R.load_checkpoint(path)  # raises if the file were torn
        assert torch.all(ckpt["model"]["w"] == ckpt["step"])  # and it is one whole write, not a mix
        steps.append(ckpt["step"])
    assert any(s > 0 for s in steps), "the writer never completed a save: the test did not exercise anything"


# 4. Disk full while saving: a clear error, the previous checkpoint intact

@pytest.fixture
def tiny_disk(tmp_path, request):
    """A real tmpfs of 1 MiB, or of the size a test's `@pytest.mark.disk_size("4m")` asks for (needs root, as on the
    project's machines and CI)."""
    d = tmp_path / "tmpfs"
    d.mkdir()
    size = marker.args[0] if (marker := request.node.get_closest_marker("disk_size")) else "1m"
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(d)]).returncode:
        pytest.skip("cannot mount a tmpfs here (not root); test_size_limited_file covers disk full instead")
    yield d
    subprocess.run(["umount", "--lazy", str(d)], check=True)  # lazy: a thread of a failed test may still hold a file


def test_disk_full_keeps_the_previous_checkpoint(tiny_disk):
    path = tiny_disk / "last.pt"
    R.save_checkpoint({"model": {"w": torch.ones(10_000)}}, path)  # 40 kB fits
    with pytest.raises(OSError, match=r"cannot write .*last.pt: No space left on device; the previous file is unchanged"):
        R.save_checkpoint({"model": BIG}, path)  # 4 MB does not
    assert torch.equal(R.load_checkpoint(path)["model"]["w"], torch.ones(10_000))
    assert sorted(os.listdir(tiny_disk)) == ["last.pt"]  # the partial temp file was removed


def test_disk_full_during_training_fails_the_run_clearly(tiny_disk):
    # an mlp checkpoint (~1.3 MB with Adam's state) cannot fit on the 1 MiB disk; config, status, metrics can
    with pytest.raises(OSError, match="No space left on device"):
        T.fit(T.TrainConfig(**{**TINY, "model": "mlp", "runs_root": str(tiny_disk), "run_dir": str(tiny_disk / "r")}))
    s = R.run_status(tiny_disk / "r")
    assert s["status"] == "failed" and "No space left on device" in s["error"]


def fill(disk: Path):
    "Take every free byte of `disk`."
    with open(disk / "filler", "wb", buffering=0) as f:
        try:
            for size in (1 << 16, 1 << 10, 1):
                while True: f.write(b"x" * size)
        except OSError: pass


def test_disk_full_while_taking_a_run_lock_keeps_no_lock(tiny_disk):
    "The lock's holder line cannot be written: the error names .lock, and the lock is given back (a resume can run)."
    (tiny_disk / "r").mkdir()
    fill(tiny_disk)
    with pytest.raises(OSError, match=r"cannot write .*/r/\.lock: No space left on device"): R.lock_run(tiny_disk / "r")
    assert not lock_held(tiny_disk / "r" / ".lock") and R.held_dir(tiny_disk / "r") is None


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # TensorBoard's thread's own
def test_disk_full_under_tensorboard_fails_the_run_naming_the_folder(tiny_disk):
    """The disk fills after epoch 1: TensorBoard's writing thread is the first to find no space. The run fails with
    an error naming TensorBoard's folder, and its status says so (not `killed`, though no new file fits)."""
    cfg = T.TrainConfig(**{**TINY, "epochs": 3, "tensorboard": True, "runs_root": str(tiny_disk),
                           "run_dir": str(tiny_disk / "r")})
    with pytest.raises(OSError, match=r"cannot write TensorBoard's events in .*/r/tb: No space left on device"):
        T.fit(cfg, on_epoch=lambda row: row["epoch"] == 1 and fill(tiny_disk))
    s = R.run_status(tiny_disk / "r")
    assert s["status"] == "failed" and "TensorBoard's events in" in s["error"], s
    assert [h["epoch"] for h in R.read_history(tiny_disk / "r")] == [1]


@pytest.mark.disk_size("4m")  # room for three tiny trials
def test_disk_full_under_study_db_says_so_and_loses_no_point(tiny_disk, tmp_path, monkeypatch):
    """The disk fills while a sweep runs: it stops saying its database is full; with room again it trains the rest,
    also when the disk filled as a trial was being made (it never got a worker nor a heartbeat: GRACE s later it is
    queued again; shortened here)."""
    import mnist_lab.sweep as S
    monkeypatch.setattr(S, "GRACE", 2)
    params = {**TINY, "augment": "pace", "plugins": str(pace_plugin(tmp_path, 0.1))}
    def fill_after_trial_0():
        wait_until(lambda: (tiny_disk / "sw/trials/0000/summary.json").exists(), every=0.05, timeout=60)
        fill(tiny_disk)
    threading.Thread(target=fill_after_trial_0, daemon=True).start()
    with pytest.raises(RuntimeError, match=r"sweep sw: its study database could not be written \(database or disk is full"):
        S.sweep({"lr": [0.01, 0.02, 0.03]}, tiny_disk / "sw", params=params)
    (tiny_disk / "filler").unlink()
    df = S.sweep({"lr": [0.01, 0.02, 0.03]}, tiny_disk / "sw", params=params, retry_failed=True)
    assert sorted(df.status) == ["completed"] * 3, df[["run", "status", "error"]]


def test_an_orphan_holding_the_grid_s_last_point_is_queued_again_once(tmp_path, monkeypatch):
    """A trial made with the grid's last point whose worker died before naming itself: failing it outside `optimize`
    makes GridSampler call `study.stop()`, which raises after the FAIL is saved; the trial is still queued again, with
    its point, and a second worker failing it too (SQLite lets both succeed) adds no second retry."""
    import optuna
    import mnist_lab.sweep as S
    storage = S.storage_for(f"sqlite:///{tmp_path}/study.db")
    study = optuna.create_study(storage=storage, sampler=optuna.samplers.GridSampler({"lr": [0.1, 0.2]}))
    study.ask()  # trial 0, point 0: its maker died before naming its worker
    done = study.ask()
    done.suggest_categorical("lr", [0.1, 0.2])
    study.tell(done, 1.0)
    monkeypatch.setattr(S, "GRACE", -1)  # the orphan is old enough at once
    assert S.next_step(study, 2) == "train"
    (retry,) = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert retry.system_attrs["failed_trial"] == 0 and retry.system_attrs["grid_id"] == 0
    S.retry_callback()(study, study.trials[0])  # the other worker's late callback
    assert len(study.get_trials(states=(optuna.trial.TrialState.WAITING,))) == 1


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the refused heartbeat thread
def test_a_study_db_write_refused_anywhere_loses_no_point(tmp_path, monkeypatch):
    """The class behind the full disk: the database refuses the k-th write of a sweep and every one after it, for
    each k of a trial's life (a trial made without its grid point, its parameters, its worker; an end not recorded),
    in the first of two trials (the full-disk test above takes a later one). Each time the sweep stops saying so,
    and run again it trains exactly the grid's points."""
    import optuna
    import mnist_lab.sweep as S
    monkeypatch.setattr(S, "GRACE", 1)
    writes, refuse_from = [0], [None]
    for name in ("create_new_trial", "set_trial_param", "set_trial_state_values", "set_trial_intermediate_value",
                 "set_trial_user_attr", "set_trial_system_attr", "record_heartbeat"):
        def write(self, *a, _write=getattr(optuna.storages.RDBStorage, name), **kw):
            writes[0] += 1
            if refuse_from[0] is not None and writes[0] >= refuse_from[0]:
                raise optuna.exceptions.StorageInternalError("database or disk is full")
            return _write(self, *a, **kw)
        monkeypatch.setattr(optuna.storages.RDBStorage, name, write)
    params, space = {**TINY, "epochs": 1, "steps_per_epoch": 1}, {"lr": [0.01, 0.02]}
    S.sweep({"lr": [0.01]}, tmp_path / "counted", params=params)  # the writes of one trial's life
    for k in range(1, writes[0] + 1):
        writes[0], refuse_from[0] = 0, k
        with pytest.raises(RuntimeError, match="its study database could not be written"):
            S.sweep(space, tmp_path / f"k{k}", params=params)
        refuse_from[0] = None
        df = S.sweep(space, tmp_path / f"k{k}", params=params)
        assert sorted(zip(df.status, df.lr)) == [("completed", 0.01), ("completed", 0.02)], (k, df)


def test_size_limited_file(tmp_path):
    "Disk full for any user: RLIMIT_FSIZE makes the kernel refuse writes past 100 kB (EFBIG), in a child process."
    path = tmp_path / "last.pt"
    R.save_checkpoint({"model": {"w": torch.ones(1000)}}, path)
    r = run_py(r'''
import resource, signal, sys, torch
from mnist_lab.record import save_checkpoint
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG as an error instead of being killed
resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
try: save_checkpoint({"model": {"w": torch.zeros(1_000_000)}}, sys.argv[1])
except OSError as e: print("ERROR", e); sys.exit(3)
''', path)
    assert r.returncode == 3 and "cannot write" in r.stdout and "previous file is unchanged" in r.stdout, r.stdout + r.stderr
    assert torch.equal(R.load_checkpoint(path)["model"]["w"], torch.ones(1000))
    assert os.listdir(tmp_path) == ["last.pt"]


# 5. Read-only run folder: a clear error, not a silently skipped save

def test_read_only_run_folder(tmp_path):
    run = T.fit(T.TrainConfig(**{**TINY, "epochs": 1}, runs_root=str(tmp_path), run_dir=str(tmp_path / "r"))).run_dir
    before = (run / "last.pt").read_bytes()
    if os.geteuid() == 0:  # root ignores permissions: make the folder read-only for real with a bind mount
        subprocess.run(["mount", "--bind", str(run), str(run)], check=True)
        subprocess.run(["mount", "-o", "remount,ro,bind", str(run)], check=True)
    else: run.chmod(0o555)
    try:
        with pytest.raises(OSError, match=r"cannot write .*r/(metrics.jsonl|config.json|.lock).*(Read-only file system|Permission denied)"):
            T.fit(T.TrainConfig(**{**TINY, "runs_root": str(tmp_path), "resume": str(run), "epochs": 3}))
    finally:
        if os.geteuid() == 0: subprocess.run(["umount", str(run)], check=True)
        else: run.chmod(0o755)
    assert (run / "last.pt").read_bytes() == before


# 6. Truncated, empty and garbage checkpoints: one clear error naming the file; resume falls back

@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage"])
def test_damaged_checkpoint_gives_one_clear_error(tmp_path, damage):
    path = tmp_path / "last.pt"
    R.save_checkpoint({"model": {"w": torch.ones(1000)}}, path)
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 2], "empty": b"", "garbage": os.urandom(5000)}[damage])
    with pytest.raises(R.CheckpointError) as e:
        R.load_checkpoint(path)
    assert str(path) in str(e.value) and "weights_only=False" not in str(e.value)
    assert e.value.__suppress_context__  # torch's own message (which suggests weights_only=False) is dropped


def test_resume_falls_back_to_the_previous_good_checkpoint(tmp_path, capsys):
    run = T.fit(T.TrainConfig(**TINY, runs_root=str(tmp_path), run_dir=str(tmp_path / "r"))).run_dir
    (run / "last.pt").write_bytes((run / "last.pt").read_bytes()[:1000])  # torn by something outside our control
    res = T.fit(T.TrainConfig(**{**TINY, "runs_root": str(tmp_path), "resume": str(run), "epochs": 3}))
    assert "last.pt is not a readable checkpoint" in capsys.readouterr().out  # said, then resumed from best.pt
    assert [h["epoch"] for h in res.history] == [1, 2, 3] and R.run_status(run)["status"] == "completed"
    for f in ("last.pt", "best.pt"): (run / f).write_bytes(b"junk")
    with pytest.raises(R.CheckpointError, match="no readable checkpoint"):
        T.fit(T.TrainConfig(**{**TINY, "runs_root": str(tmp_path), "resume": str(run)}))


# 7. A pickle payload disguised as a checkpoint is refused, even with TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD

class Payload:
    def __init__(self, marker): self.marker = marker
    def __reduce__(self): return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("force_unsafe", [False, True])
def test_pickle_payload_is_refused(tmp_path, force_unsafe):
    marker, evil = tmp_path / "PWNED", tmp_path / "last.pt"
    torch.save({"model": {}, "x": Payload(marker)}, evil)
    from mnist_lab.eval import load_run
    def load(fn, path):  # in a child forked from here, with the variable set there if asked
        if force_unsafe: os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"
        fn(path)
    for fn in (R.load_checkpoint, load_run):
        err = tmp_path / "error"
        assert exit_codes([in_child(lambda: load(fn, evil), err)]) == [1]
        assert "CheckpointError" in err.read_text() and "is not a readable checkpoint" in err.read_text()
        assert not marker.exists(), "the payload ran"
    (tmp_path / "model.pt").write_bytes(evil.read_bytes())  # also as a run folder's final weights
    (tmp_path / "config.json").write_text(json.dumps({"model": "linear"}))
    assert exit_codes([in_child(lambda: load(load_run, tmp_path), err)]) == [1]
    assert "is not a readable checkpoint" in err.read_text() and not marker.exists()


def test_every_torch_load_in_the_package_is_weights_only():
    calls = []
    for f in Path(mnist_lab.__file__).parent.glob("*.py"):
        text = f.read_text()
        for m in re.finditer(r"torch\.load\(", text):
            depth, i = 1, m.end()
            while depth: depth += {"(": 1, ")": -1}.get(text[i], 0); i += 1
            calls.append((f.name, text[m.start():i]))
    assert calls, "no torch.load found: the scan is broken"
    unsafe = [c for c in calls if "weights_only=True" not in c[1]]
    assert not unsafe, unsafe


def test_safetensors_export_round_trip(tmp_path):
    from mnist_lab.eval import export_safetensors, load_safetensors
    res = T.fit(T.TrainConfig(**TINY, runs_root=str(tmp_path)))
    model, cfg, info = load_safetensors(export_safetensors(res.run_dir))
    assert info["shape"] == [1, 28, 28] and len(info["classes"]) == 10
    assert cfg.model == "linear"
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), res.model.state_dict().values()))


# 8. Every bad parameter is rejected before training, naming it and the allowed values, through papermill too

BAD = [("lr", "nan", "lr=nan: must be a finite number > 0"), ("lr", "inf", "lr=inf: must be a finite number > 0"),
       ("lr", -1, "lr=-1.0: must be a finite number > 0"), ("lr", 0, "lr=0.0: must be a finite number > 0"),
       ("batch_size", 0, "batch_size=0: must be >= 1"), ("batch_size", -1, "batch_size=-1: must be >= 1"),
       ("batch_size", 1.5, "batch_size=1.5: expected int"), ("batch_size", "abc", "batch_size='abc': expected int"),
       ("epochs", 0, "epochs=0: must be >= 1"),
       ("model", "resnet", "model='resnet': choose one of linear, mlp, lenet, cnn"),
       ("optimizer", "lion", "optimizer='lion': choose one of adam, adamw, sgd, rmsprop, adadelta"),
       ("scheduler", "warmup", "scheduler='warmup': choose one of none, step, multistep, exponential, cosine, "
                               "onecycle, reduce_on_plateau"),
       ("dataset", "cifar", "dataset='cifar': choose one of auto, mnist, fashion_mnist, kmnist, mnist_sample"),
       ("val_split", 0, "val_split=0.0: must be in (0, 1)"), ("val_split", 1, "val_split=1.0: must be in (0, 1)"),
       ("val_split", 1.5, "val_split=1.5: must be in (0, 1)"),
       ("lrr", 0.1, "'lrr': did you mean 'lr'?"),
       ("name", "../../etc", "name='../../etc': use letters"), ("run_dir", "../../etc", "must be a new folder inside runs_root"),
       ("name", None, "name=None: expected str"), ("seed", 2**32, "seed=4294967296: must be < 2**32"),
       ("width", 100_000, "width=100000: must be <= 1,024"), ("threads", 4000, "threads=4000: must be <= 1,024"),
       ("run_dir", "runs/" + "x" * 4083, "at most 1000 characters"), ("run_dir", "runs/" + "y" * 300, "200 a folder"),
       ("model_args", "[" * 100_000, "model_args='[[[["), ("_lr", 0.5, "'_lr': did you mean 'lr'?")]


@pytest.mark.parametrize("name,value,message", BAD, ids=[f"{n}={v}" for n, v, _ in BAD])
def test_bad_parameter_rejected_in_process(name, value, message):
    with pytest.raises(ValueError) as e:
        T.TrainConfig.from_params(**{name: value})
    assert message in str(e.value)


def test_bad_parameters_rejected_through_papermill(tmp_path):
    def one(i_case):
        i, (name, value, message) = i_case
        r = papermill(tmp_path / f"bad{i}.ipynb", ("dataset", "mnist_sample"), (name, value), cwd=tmp_path)
        return name, value, message, r
    # every message is checked in-process above; through papermill, one bad value and one misspelled name show
    # that papermill's exit code and output carry them (a kernel start each: 19 of them cost 90 s of CI)
    cases = [c for c in BAD if c[0] in ("lrr",) or (c[0], c[1]) == ("lr", "nan")]
    assert len(cases) == 2
    with ThreadPoolExecutor(2) as pool:
        for name, value, message, r in pool.map(one, enumerate(cases)):
            assert r.returncode != 0, (name, value)
            assert message in r.stdout + r.stderr, (name, value, r.stderr[-1500:])
    assert not (tmp_path / "runs").exists()  # no run was started, nothing was written


# 9. run_dir / name escaping the runs root (also in 8): absolute paths and symlinks too

def test_paths_cannot_escape_the_runs_root(tmp_path):
    for kw in ({"name": "/etc"}, {"name": "a/../../b"}, {"run_dir": "/etc/x"}, {"run_dir": str(tmp_path / "other")}):
        with pytest.raises(ValueError, match="name=|run_dir="):
            T.TrainConfig(**{**TINY, "runs_root": str(tmp_path / "runs"), **kw})
    (tmp_path / "runs" / "exp" / "20260101-000000-abcdef").mkdir(parents=True)
    (tmp_path / "runs" / "exp" / "20260101-000000-abcdef" / "status.json").write_text("{}")
    (tmp_path / "runs" / "link").symlink_to("/tmp")
    for kw, message in [({"run_dir": str(tmp_path / "runs/link/x")}, "inside runs_root"),
                        ({"name": "link/x"}, "leads outside runs_root"),
                        ({"run_dir": str(tmp_path / "runs")}, "must be a new folder inside runs_root"),
                        ({"run_dir": str(tmp_path / "runs/exp")}, "holds other runs"),
                        ({"name": "x" * 5000}, "(5000 characters): at most 100")]:
        with pytest.raises(ValueError, match=re.escape(message)):
            T.TrainConfig(**{**TINY, "runs_root": str(tmp_path / "runs"), **kw})


# 10. Corrupt dataset files: a clear error at load; local non-official files load and are recorded

def write_idx(path, arr: torch.Tensor, magic=None):
    header = magic or bytes([0, 0, 8, arr.ndim])
    path.write_bytes(gzip.compress(header + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.numpy().tobytes()))


@pytest.fixture
def tiny_dataset(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    x, y = torch.randint(0, 255, (20, 28, 28), dtype=torch.uint8), torch.randint(0, 10, (20,), dtype=torch.uint8)
    for stem, arr in zip(IDX_STEMS, (x, y, x[:10], y[:10])): write_idx(d / f"{stem}.gz", arr)
    return d


def test_valid_local_files_load_as_a_local_dataset(tiny_dataset):
    data = load_data("mnist", tiny_dataset, download_ok=False)
    assert len(data.x_train) == 20 and not data.official and len(data.files) == 4


@pytest.mark.parametrize("damage,message", [
    ("truncated", "header says (20, 28, 28) = 15680 bytes, file holds"),
    ("magic", "wrong magic number"),
    ("count", "labels are (19,) torch.uint8 for 20 images; expected 20 integer labels"),
    ("not_gzip", "cannot be read as gzip"),
    ("32x32", "test images are (1, 28, 28), training images (1, 32, 32) (channels, height, width); they must match"),
    ("empty_test", "test: images are (0, 1, 28, 28) torch.uint8; expected uint8 (N, C, H, W) or (N, H, W) with at least one image"),
])
def test_corrupt_dataset_files_fail_clearly(tiny_dataset, damage, message):
    images, labels = tiny_dataset / "train-images-idx3-ubyte.gz", tiny_dataset / "train-labels-idx1-ubyte.gz"
    raw = gzip.decompress(images.read_bytes())
    if damage == "truncated": images.write_bytes(gzip.compress(raw[:-100]))
    if damage == "magic": images.write_bytes(gzip.compress(b"\x00\x00\x09\x03" + raw[4:]))
    if damage == "count": write_idx(labels, torch.zeros(19, dtype=torch.uint8))
    if damage == "not_gzip": images.write_bytes(raw)
    if damage == "32x32": write_idx(images, torch.zeros(20, 32, 32, dtype=torch.uint8))
    if damage == "empty_test":
        write_idx(tiny_dataset / "t10k-images-idx3-ubyte.gz", torch.zeros(0, 28, 28, dtype=torch.uint8))
        write_idx(tiny_dataset / "t10k-labels-idx1-ubyte.gz", torch.zeros(0, dtype=torch.uint8))
    with pytest.raises(ValueError, match=re.escape(message)):
        load_data("mnist", tiny_dataset, download_ok=False)


def test_shared_mnist10k_is_a_local_subset_and_recorded(shared_mnist):
    data = load_data("mnist", shared_mnist, download_ok=False)
    assert len(data.x_train) == 10_000 and len(data.x_test) == 10_000 and not data.official
    assert data.files["t10k-images-idx3-ubyte.gz"] == "9fb629c4189551a2d022fa330f9573f3"  # the official test set


@pytest.fixture
def mirror(tmp_path, tiny_dataset, monkeypatch):
    """A local HTTP server as torchvision's MNIST download mirror, serving `tiny_dataset`'s files, with
    torchvision's list of official md5 sums replaced by theirs: the real download and md5 code paths run
    offline (the real MNIST files cannot be fetched here)."""
    import torchvision, mnist_lab.data
    from mnist_lab.data import md5sum
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tiny_dataset))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(torchvision.datasets.MNIST, "mirrors", [f"http://127.0.0.1:{server.server_port}/"])
    resources = [(p.name, md5sum(p)) for p in sorted(tiny_dataset.glob("*.gz"))]
    monkeypatch.setattr(torchvision.datasets.MNIST, "resources", resources)  # what the download checks
    monkeypatch.setitem(mnist_lab.data.OFFICIAL_MD5S, "MNIST", tuple(md5 for _, md5 in resources))  # and `official`
    yield tiny_dataset
    server.shutdown()


def test_downloads_are_md5_checked_and_recorded_as_official(tmp_path, mirror):
    data = load_data("mnist", tmp_path / "dl", download_ok=True)
    assert data.official and len(data.x_train) == 20
    assert (tmp_path / "dl" / "MNIST" / "raw" / "train-images-idx3-ubyte.gz").is_file()
    labels = mirror / "t10k-labels-idx1-ubyte.gz"  # the mirror now serves a damaged file
    labels.write_bytes(labels.read_bytes()[:-3] + b"xyz")
    with pytest.raises(FileNotFoundError, match="(?s)download failed: .*t10k-labels-idx1-ubyte.gz.*corrupted"):
        load_data("mnist", tmp_path / "dl2", download_ok=True)


# 12. Eight runs started at the same moment with the same name: eight distinct folders

@pytest.mark.xdist_group("many_processes")  # see conftest.py
def test_eight_simultaneous_runs_get_eight_folders(tmp_path):
    import torch._dynamo  # noqa: F401 (the optimizers import it): the children fork with every import done
    cfg = T.TrainConfig(**{**TINY, "epochs": 1}, runs_root=str(tmp_path), name="same", threads=1)
    start = time.time() + 1
    def train_at_start():
        time.sleep(max(0.0, start - time.time()))
        T.fit(cfg)
    pids = [in_child(train_at_start, tmp_path / f"error{i}") for i in range(8)]  # eight processes at one moment
    assert exit_codes(pids) == [0] * 8, [e.read_text() for e in tmp_path.glob("error*")]
    dirs = list((tmp_path / "same").iterdir())
    assert len(dirs) == 8
    for d in dirs: assert R.run_status(d)["status"] == "completed" and json.loads(Path(d, "config.json").read_text())["name"] == "same"


def test_same_explicit_run_dir_is_claimed_once(tmp_path):
    cfg = T.TrainConfig(**TINY, runs_root=str(tmp_path), run_dir=str(tmp_path / "r"))
    R.new_run_dir(cfg)
    with pytest.raises(FileExistsError, match="already holds a run; continue it with resume="):
        R.new_run_dir(cfg)


# 13. A papermill run whose kernel dies or times out is recorded as failed and resumes exactly

def test_papermill_timeout_is_recorded_and_resumes_exactly(tmp_path):
    # The `pace` plugin sleeps 0.1 s a batch: about 2 s an epoch whatever the CPU speed, so the 8 s cell timeout
    # (papermill's timeout is per cell) lands after the first checkpoint and before the end.
    pace = pace_plugin(tmp_path, 0.1)
    params = [("dataset", "mnist_sample"), ("model", "cnn"), ("width", 16), ("dropout", 0.1), ("batch_size", 64),
              ("steps_per_epoch", 20), ("epochs", 6), ("threads", 1), ("run_dir", "runs/t"), ("tensorboard", False),
              ("plugins", str(pace)), ("augment", "pace")]
    r = subprocess.run([sys.executable, "-m", "papermill", str(ROOT / "nbs/train.ipynb"), str(tmp_path / "t.ipynb"),
                        "--execution-timeout", "8", *[a for k, v in params for a in ("-p", k, str(v))]],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300)
    run = tmp_path / "runs" / "t"
    assert r.returncode != 0 and "Timeout" in r.stderr + r.stdout
    assert (run / "last.pt").exists(), "the timeout came before the first checkpoint: raise --execution-timeout"
    deadline = time.time() + 30
    while (s := R.run_status(run))["status"] == "running" and time.time() < deadline:
        time.sleep(0.1)  # the kernel may take a moment to die
    # papermill interrupts the kernel (stopped, resumable), or the kernel died (failed, killed)
    assert (s["status"] == "stopped" and "Interrupt" in s.get("error", "")) or (s["status"] == "failed" and s.get("killed")), s
    epochs_done = s["epoch"]
    assert 0 < epochs_done < 6
    # the run's own plugins are imported only when named again: a stored config never runs code
    r = papermill(tmp_path / "t2.ipynb", ("resume", "runs/t"), ("plugins", str(pace)), cwd=tmp_path,
                  env={**os.environ, "PACE_S": "0"})  # the rest of the run at full speed
    assert r.returncode == 0, r.stderr[-2000:]
    # the uninterrupted reference, trained here: the same `pace` minus the sleep (it draws nothing from `gen`)
    from mnist_lab.data import AUGMENTATIONS
    AUGMENTATIONS["pace"] = lambda x, gen: x
    try: ref = T.fit(T.TrainConfig.from_params(**{k: v for k, v in params if k not in ("run_dir", "plugins")},
                                              runs_root=str(tmp_path / "ref"), progress="none"))
    finally: AUGMENTATIONS.pop("pace")
    resumed = torch.load(run / "model.pt", weights_only=True)
    assert all(torch.equal(resumed[k], v) for k, v in ref.model.state_dict().items())


# 14. A run received from someone else (folder, checkpoint, config.json, safetensors) never runs its code

@pytest.mark.parametrize("form", ["path", "module"])
def test_loading_a_received_run_never_imports_its_plugins(tmp_path, monkeypatch, form):
    "Every loading entry point, on a run whose stored config names a hostile plugin: the canary stays absent."
    from safetensors.torch import save_file
    import mnist_lab.eval as E, mnist_lab.runs, mnist_lab.cli
    canary = tmp_path / "canary"
    for f in ("evil.py", "evil_module.py"): (tmp_path / f).write_text(f"open({str(canary)!r}, 'w')\n")
    monkeypatch.syspath_prepend(str(tmp_path))  # so the module form would be importable, if anything tried
    plugins = str(tmp_path / "evil.py") if form == "path" else "evil_module"
    run = T.fit(T.TrainConfig(**TINY, runs_root=str(tmp_path / "runs"))).run_dir
    cfg = {**json.loads((run / "config.json").read_text()), "plugins": plugins}
    (run / "config.json").write_text(json.dumps(cfg))
    for name in ("last.pt", "best.pt"):
        ck = R.load_checkpoint(run / name)
        R.save_checkpoint({**ck, "config": {**ck["config"], "plugins": plugins}}, run / name)
    st = tmp_path / "shared.safetensors"
    weights = R.load_checkpoint(run / "last.pt")["model"]
    save_file({k: v.contiguous() for k, v in weights.items()}, str(st), metadata={"mnist_lab_config": json.dumps(cfg)})
    E.load_run(run); E.load_run(run / "last.pt"); E.load_safetensors(st); E.export_safetensors(run)
    assert mnist_lab.cli.main(["eval", str(run / "last.pt")]) == 0  # a checkpoint file works too, plots beside it
    assert (run / "confusion.png").is_file()
    (run / "confusion.png").unlink(); os.chmod(run, 0o777)  # a folder anyone may change: numbers, no plots there
    assert mnist_lab.cli.main(["eval", str(run)]) == 0 and not (run / "confusion.png").exists()
    os.chmod(run, 0o755)
    T.fit(T.TrainConfig(resume=str(run)))  # already finished: a resume that trains nothing
    mnist_lab.runs.runs_table(tmp_path / "runs")
    assert not canary.exists()
    # a model only the plugin registers: the error names the plugin and how to pass it, and still runs nothing
    (run / "config.json").write_text(json.dumps({**cfg, "model": "evil_net"}))
    with pytest.raises(ValueError, match=re.escape(f"name them yourself (--plugins {plugins} on the command line")):
        E.load_run(run)
    assert not canary.exists()


# 15. One writer per run folder: concurrent resumes of one run, exactly one trains

@pytest.mark.xdist_group("many_processes")  # see conftest.py
def test_concurrent_resumes_one_trains_the_others_fail_at_once(tmp_path):
    first = T.fit(T.TrainConfig(**{**TINY, "epochs": 1}, runs_root=str(tmp_path / "runs"), save_period=1000)).run_dir
    start = time.time() + 1  # fit has imported everything: the children fork with no import left to do
    def resume_at_start():
        time.sleep(max(0.0, start - time.time()))
        T.fit(T.TrainConfig(resume=str(first), epochs=300, progress="none", save_period=1000))
    errors = [tmp_path / f"error{i}" for i in range(3)]
    codes = exit_codes([in_child(resume_at_start, e) for e in errors], timeout=300)  # three at one moment
    assert sorted(codes) == [0, 1, 1], [e.read_text() for e in errors if e.exists()]
    losers = [e.read_text() for e in errors if e.exists()]
    assert len(losers) == 2 and all("is being written by another process" in err for err in losers), losers
    config = json.loads((first / "config.json").read_text())
    summary = json.loads((first / "summary.json").read_text())
    history = R.read_history(first)
    assert config["epochs"] == 300 and summary["epochs"] == 300 and len(history) == 300
    assert R.load_checkpoint(first / "last.pt")["state"]["epoch"] == 300
    # eval's plots and a safetensors export into the folder wait for no writer either: they fail at once
    from mnist_lab.eval import report, export_safetensors
    holder = ready_child(lambda ready: (R.lock_run(first), ready(), time.sleep(60)), tmp_path / "holder-error")
    try:
        for write in (lambda: report(first, show=False), lambda: export_safetensors(first)):
            with pytest.raises(R.RunLocked, match="is being written by another process"): write()
    finally: os.kill(holder, signal.SIGKILL); os.waitpid(holder, 0)
    assert not (first / "confusion.png").exists() and not (first / "model.safetensors").exists()


def test_an_unreadable_checkpoint_is_not_corrupt_and_is_never_overwritten(tmp_path):
    run = T.fit(T.TrainConfig(**TINY, runs_root=str(tmp_path), run_dir=str(tmp_path / "r"))).run_dir
    files = {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != ".lock"}
    (run / "last.pt").chmod(0)  # intact, but not ours to read
    # root reads through permissions: drop the capabilities that let it, as any user's process is
    drop = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"] if os.geteuid() == 0 else []
    code = ("import sys, mnist_lab.train as T; T.fit(T.TrainConfig(dataset='mnist_sample', model='linear', "
            "batch_size=100, steps_per_epoch=2, scheduler='none', tensorboard=False, progress='none', "
            "runs_root=sys.argv[2], resume=sys.argv[1], epochs=3))")
    r = subprocess.run([*drop, sys.executable, "-c", code, str(run), str(tmp_path)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 1 and f"cannot read {run / 'last.pt'}: Permission denied" in r.stderr, r.stderr[-2000:]
    assert "not a readable checkpoint" not in r.stderr + r.stdout  # no fallback to best.pt
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != ".lock"} == files


# 16. Hostile files cannot exhaust memory: an IDX gzip bomb, an IDX header that lies, a YAML alias bomb

MEASURE = r'''
import resource, sys
import torch, mnist_lab.data, mnist_lab.sweep  # the interpreter as a run has it
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try: exec(sys.argv[1]); print("no error")
except ValueError as e: print("ValueError:", e)
print("GROWTH_MB", (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
'''


def growth(code: str, *args) -> tuple:
    "Run `code` in a fresh interpreter with torch imported: (its output, how far its peak RSS grew, MB)."
    r = subprocess.run([sys.executable, "-c", MEASURE, code, *args], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout, float(r.stdout.split("GROWTH_MB")[1])


def gzip_bomb(path, header: bytes, gib: float):
    "A small .gz whose content is `header` and then `gib` GiB of zeros (compressed chunk by chunk)."
    import zlib
    z, chunk = zlib.compressobj(9, zlib.DEFLATED, 31), bytes(64 << 20)
    with open(path, "wb") as f:
        f.write(z.compress(header))
        for _ in range(int(gib * 16)): f.write(z.compress(chunk))
        f.write(z.flush())


@pytest.mark.parametrize("declared", [(2**15, 2**8, 2**8), (60000, 28, 28)])  # 2 GiB declared, or an honest 47 MB
def test_idx_bomb_is_refused_within_bounded_memory(tmp_path, declared):
    bomb = tmp_path / "train-images-idx3-ubyte.gz"
    gzip_bomb(bomb, bytes([0, 0, 8, 3]) + struct.pack(">3I", *declared), gib=1)
    assert bomb.stat().st_size < 5 << 20  # a few MB on disk
    out, mb = growth("mnist_lab.data.read_idx(sys.argv[2])", str(bomb))
    assert "refusing to read it" in out or "file holds more" in out, out
    assert mb < 300, f"reading the bomb grew the process by {mb:.0f} MB"


def test_yaml_alias_bomb_is_refused_within_bounded_memory(tmp_path):
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"] + [
        f"a{i}: &a{i} [{', '.join([f'*a{i-1}'] * 9)}]" for i in range(1, 9)]  # 9**9 = 387M leaves, 474 bytes
    spec = tmp_path / "sweep.yaml"
    spec.write_text("\n".join(levels) + "\nspace: {lr: *a8}\n")
    out, mb = growth("mnist_lab.sweep.load_spec(sys.argv[2])", str(spec))
    assert "anchors and aliases" in out and mb < 300, (out, mb)
    r = subprocess.run([str(Path(sys.executable).parent / "mnist-lab"), "sweep", str(spec)], capture_output=True,
                       text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 1 and "anchors and aliases" in r.stderr and not (tmp_path / "runs").exists(), r.stderr


# 17. A damaged record is reported, never deleted or retrained, and never hides the other runs

def test_damaged_records_are_reported_and_left_untouched(tmp_path):
    import mnist_lab.sweep as S
    from mnist_lab.runs import runs_table
    good = T.fit(T.TrainConfig(**TINY, runs_root=str(tmp_path / "runs"), name="good")).run_dir
    trial = tmp_path / "runs" / "sweep" / "trials" / "0000"  # the folder of the sweep's first trial
    trial.mkdir(parents=True)
    (trial / "status.json").write_text('{"status": "runn')  # cut short by a crash
    (trial / "last.pt").write_bytes(b"precious checkpoint")
    before = {p.name: p.read_bytes() for p in trial.iterdir()}
    claimed = trial.parent / "0001"  # the empty status.json that claims a folder, of a start that died at once
    claimed.mkdir()
    (claimed / "status.json").touch()
    S.sweep({"lr": [0.1, 0.2]}, tmp_path / "runs" / "sweep", params=TINY)  # the sweep comes to those trials
    t, claimed_trial = S.load_study(tmp_path / "runs" / "sweep").trials
    assert t.state.name == "FAIL" and "status.json: not JSON" in t.user_attrs["error"], t.user_attrs
    assert claimed_trial.state.name == "COMPLETE" and R.run_status(claimed)["status"] == "completed"
    assert {p.name: p.read_bytes() for p in trial.iterdir()} == before
    half = tmp_path / "runs" / "half" / "r"
    half.mkdir(parents=True)
    R.write_status(half, "completed")
    (half / "metrics.jsonl").write_text('{"epoch": 1, "val_accuracy": 0.9}\n{"epoch": 2, "val_acc')
    df = runs_table(tmp_path / "runs").set_index("run")
    assert df.loc[f"good/{good.name}", "status"] == "completed"
    assert df.loc[f"sweep/trials/{trial.name}", "status"] == "damaged"
    assert "status.json" in df.loc[f"sweep/trials/{trial.name}", "error"]
    assert df.loc["half/r", "status"] == "damaged" and "metrics.jsonl" in df.loc["half/r", "error"]


def test_a_run_that_cannot_start_keeps_no_lock(tmp_path, monkeypatch):
    "A failure while the record is being opened (a full disk, say) gives the lock back: a later resume is not blocked."
    def full_disk(run_dir): raise OSError(28, "No space left on device")
    monkeypatch.setattr(T, "link_notebook", full_disk)
    with pytest.raises(OSError, match="No space left"):
        T.fit(T.TrainConfig(**TINY, runs_root=str(tmp_path / "runs")))
    (run,) = (tmp_path / "runs" / "run").iterdir()
    assert not R._LOCKS and run_py(f"from mnist_lab.record import lock_run; lock_run({str(run)!r})").returncode == 0


# 11. Links planted where a run writes (a shared, group-writable runs/): nothing is written through them

def test_nothing_is_written_through_a_link_in_a_run_folder(tmp_path):
    """`.lock` and `confusion.png` as links to a file of someone else's: `mnist-lab eval` refuses the first and
    replaces the second, leaving the target alone. A training run whose folder is swapped for a link to someone
    else's folder keeps writing into the folder it claimed."""
    mnist_lab_cli = str(Path(sys.executable).parent / "mnist-lab")
    victim = tmp_path / "yours"
    victim.mkdir()
    (victim / "thesis.txt").write_text("keep")
    run = T.fit(T.TrainConfig(**{**TINY, "runs_root": str(tmp_path / "runs")})).run_dir
    (run / ".lock").unlink()
    (run / ".lock").symlink_to(victim / "thesis.txt")
    (run / "confusion.png").symlink_to(victim / "thesis.txt")
    r = subprocess.run([mnist_lab_cli, "eval", str(run)], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 1 and "never writes through one" in r.stderr, r.stderr[-1500:]
    (run / ".lock").unlink()
    r = subprocess.run([mnist_lab_cli, "eval", str(run)], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-1500:]
    assert not (run / "confusion.png").is_symlink() and (run / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    assert (victim / "thesis.txt").read_text() == "keep"
    # the folder swapped for a link while the run trains (a paced run: ~4 s of idle wall time)
    params = {**TINY, "epochs": 8, "steps_per_epoch": 10, "augment": "pace",
              "plugins": str(pace_plugin(tmp_path, 0.05))}
    p = subprocess.Popen([mnist_lab_cli, "fit", *[a for k, v in params.items() for a in ("-p", k, str(v))],
                          "--root", str(tmp_path / "swap")], cwd=tmp_path, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while not list((tmp_path / "swap").glob("run/*/metrics.jsonl")):
        assert time.time() < deadline and p.poll() is None, p.communicate()[0][-2000:]
        time.sleep(0.1)
    (folder,) = (tmp_path / "swap" / "run").iterdir()
    folder.rename(folder.with_name("moved"))
    folder.symlink_to(victim)
    out = p.communicate(timeout=120)[0]
    assert p.returncode == 0, out[-2000:]
    assert sorted(os.listdir(victim)) == ["thesis.txt"] and (victim / "thesis.txt").read_text() == "keep"
    moved = folder.with_name("moved")
    assert json.loads((moved / "status.json").read_text())["status"] == "completed" and (moved / "model.pt").is_file()


# 12. Memory chosen by a file: every record read is bounded; sizes are checked before anything is built

def test_hostile_records_cost_no_memory_and_lose_no_row(tmp_path):
    """A 2 GB sparse config.json, status.json linked to /dev/zero, a FIFO named status.json, a huge metrics.jsonl:
    `runs_table` answers at once, in bounded memory, with a row per run naming what is wrong."""
    good = T.fit(T.TrainConfig(**{**TINY, "runs_root": str(tmp_path / "runs"), "name": "good"})).run_dir
    for name, plant in [("sparse", lambda d: os.truncate(d / "config.json", 2 << 30)),
                        ("zero", lambda d: ((d / "status.json").unlink(), (d / "status.json").symlink_to("/dev/zero"))),
                        ("fifo", lambda d: ((d / "status.json").unlink(), os.mkfifo(d / "status.json"))),
                        ("history", lambda d: os.truncate(d / "metrics.jsonl", 1 << 30))]:
        d = tmp_path / "runs" / name / "r"
        d.parent.mkdir(parents=True)
        subprocess.run(["cp", "-a", str(good), str(d)], check=True)
        plant(d)
    out, mb = growth("from mnist_lab.runs import runs_table\ndf = runs_table(sys.argv[2])\n"
                     "print(sorted((p.split('/')[-2], s) for p, s in zip(df.path, df.status)))", str(tmp_path / "runs"))
    assert mb < 150, (out, mb)
    rows = dict(eval(out.splitlines()[0]))
    assert rows["good"] == "completed" and rows["zero"] == rows["fifo"] == "damaged", rows
    assert set(rows) == {"good", "sparse", "zero", "fifo", "history"}, rows


def test_reports_of_a_received_sweep_or_run_run_no_code_and_embed_no_linked_file(tmp_path, capsys):
    """`mnist-lab report` of a sweep whose shared study.db was rewritten (its spec names plugins and another folder):
    no plugin is imported, the report goes in the folder named. Of a run folder whose plots and notebook are links to
    someone's files: an error naming the file; its notebook a link to a FIFO: said on the page; nothing of theirs in a
    report."""
    import mnist_lab.cli, optuna
    import mnist_lab.sweep as S
    canary, elsewhere = tmp_path / "canary", tmp_path / "elsewhere"
    (tmp_path / "evil.py").write_text(f"open({str(canary)!r}, 'w').write('ran')\n")
    S.sweep({"lr": [1e-2]}, tmp_path / "sw", params={**TINY, "epochs": 1})
    study = optuna.load_study(study_name="sw", storage=f"sqlite:///{tmp_path}/sw/study.db")
    spec = study.user_attrs["spec"]
    spec = {**spec, "params": {**spec["params"], "plugins": str(tmp_path / "evil.py")}}
    for change in ({}, {"sweep_dir": str(elsewhere)}):
        study.set_user_attr("spec", {**spec, **change})
        assert mnist_lab.cli.main(["report", str(tmp_path / "sw")]) == 0, capsys.readouterr().err
        assert not canary.exists() and (tmp_path / "sw" / "report.html").is_file() and not elsewhere.exists()
    run = next((tmp_path / "sw" / "trials").iterdir())
    secret = tmp_path / "secret.txt"
    secret.write_text("the neighbour's secret")
    from mnist_lab.eval import html_report
    html_report(run)  # the plots, per_class.txt and report.html, from the run's own files
    for name in ("confusion.png", "per_class.txt", "notebook.ipynb"):  # (an in-process run has no notebook)
        own = (run / name).read_bytes() if (run / name).exists() else None
        (run / name).unlink(missing_ok=True)
        (run / name).symlink_to(secret if own is not None else tmp_path / "fifo")
        if own is None: os.mkfifo(tmp_path / "fifo")
        if own is None:  # the executed notebook: the page is written, saying why it is not shown
            html_report(run)
            assert "not shown: notebook.ipynb: " in (page := (run / "report.html").read_text()), page[-3000:]
            assert "not a regular file" in page
        else:
            with pytest.raises((OSError, ValueError), match=re.escape(name)): html_report(run)
        (run / name).unlink()
        if own is not None: (run / name).write_bytes(own)
    assert "neighbour" not in (run / "report.html").read_text()


def test_wrong_records_name_their_file_and_what_is_wrong(tmp_path):
    """Records that parse but hold the wrong things: each error names the file and what is wrong, the runs table
    keeps a row per run, a resume says which checkpoint lacks what."""
    from mnist_lab.eval import load_run
    from mnist_lab.runs import runs_table
    import mnist_lab.sweep as S
    good = T.fit(T.TrainConfig(**TINY, runs_root=str(tmp_path / "runs"), name="good")).run_dir
    def without(key):
        def plant(d):
            ck = torch.load(d / "last.pt", weights_only=True)
            del ck[key]
            torch.save(ck, d / "last.pt")
        return plant
    plants = {"rows": (lambda d: (d / "metrics.jsonl").write_text('{"epoch": 1, "val_loss": 1}\n{"epoch": 2}\n'),
                       "metrics.jsonl: damaged (line 2 lacks val_loss)"),
              "config": (lambda d: (d / "config.json").write_text("[1, 2]"), "config.json: a JSON list"),
              "pid": (lambda d: (d / "status.json").write_text(json.dumps({"status": "running", "pid": 2**70})),
                      "status.json: not a status record"),
              "test_metric": (lambda d: (d / "summary.json").write_text(json.dumps(
                  {**json.loads((d / "summary.json").read_text()), "test_accuracy": "high"})),
                              "summary.json: test_accuracy is high, not a number"),
              "huge": (lambda d: (d / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "val_accuracy": 10**400}) + "\n"),
                       "metrics.jsonl: damaged (line 1: val_accuracy is not a number)"),
              "intervals": (lambda d: (d / "summary.json").write_text(json.dumps(
                  {**json.loads((d / "summary.json").read_text()), "intervals": {"accuracy": "high"}})),
                            "summary.json: intervals is not {metric: [low, high]}"),
              "step": (without("step"), None), "config_key": (without("config"), None)}
    for name, (plant, _) in plants.items():
        d = tmp_path / "runs" / name / "r"
        d.parent.mkdir(parents=True)
        subprocess.run(["cp", "-a", str(good), str(d)], check=True)
        plant(d)
    rows = runs_table(tmp_path / "runs").set_index("run")
    assert len(rows) == 1 + len(plants)
    for name, (_, message) in plants.items():
        if message: assert rows.loc[f"{name}/r", "status"] == "damaged" and message in rows.loc[f"{name}/r", "error"]
    with pytest.raises(ValueError, match="config.json: a JSON list, not the object expected"):
        load_run(tmp_path / "runs/config/r")
    from mnist_lab.eval import html_report
    with pytest.raises(ValueError, match=r"intervals/r/summary.json: intervals is not"):  # before any plot is drawn
        html_report(tmp_path / "runs/intervals/r")
    assert not (tmp_path / "runs/intervals/r/confusion.png").exists()
    for name, key in (("step", "step"), ("config_key", "config")):  # last.pt lacks it: best.pt takes over, said
        d = tmp_path / "runs" / name / "r"
        (d / "best.pt").unlink()
        with pytest.raises(R.CheckpointError, match=f"last.pt is not a checkpoint training can resume from: {key} "):
            T.fit(T.TrainConfig(**{**TINY, "epochs": 3}, resume=str(d)))
    lying = tmp_path / "lying.safetensors"
    lying.write_bytes(struct.pack("<Q", 2**63) + b"{}")
    with pytest.raises(R.CheckpointError, match="lying.safetensors is not a readable safetensors file"):
        load_run(lying)
    (tmp_path / "sw").mkdir()
    (tmp_path / "sw" / "study.db").write_bytes(os.urandom(4096))
    for open_it in (lambda: S.join(f"sqlite:///{tmp_path}/sw/study.db", "sw"),
                    lambda: S.sweep({"lr": [0.1]}, tmp_path / "sw", params=TINY)):
        with pytest.raises(ValueError, match="sw/study.db: not an SQLite database"): open_it()


def test_sizes_from_files_are_bounded_before_anything_is_built(tmp_path):
    """Two honest IDX files at the size cap load within 300 MB; a safetensors file whose stored config asks for a
    huge model is refused before it is built; n_jobs 12 on a 2-trial sweep starts two workers, not twelve."""
    for part in ("a", "b"):
        gzip_bomb(tmp_path / f"{part}.gz", bytes([0, 0, 8, 3]) + struct.pack(">3I", 2**11, 2**8, 2**8), gib=0.125)
    out, mb = growth("import mnist_lab.data as D\nx, y = D.read_idx(sys.argv[2]), D.read_idx(sys.argv[3])\n"
                     "print(x.shape, y.shape)", str(tmp_path / "a.gz"), str(tmp_path / "b.gz"))
    assert "torch.Size([2048, 256, 256])" in out and mb < 300, (out, mb)
    from safetensors.torch import save_file
    import dataclasses
    lying = tmp_path / "lying.safetensors"
    cfg = dataclasses.asdict(T.TrainConfig(model="cnn", width=1024))
    save_file({"w": torch.zeros(10)}, str(lying), metadata={"mnist_lab_config": json.dumps(cfg),
                                                           "mnist_lab_data": json.dumps({})})
    out, mb = growth("from mnist_lab.eval import load_run\ntry: load_run(sys.argv[2])\n"
                     "except ValueError as e: print('refused:', e)", str(lying))
    assert "do not fit this model" in out and mb < 100, (out, mb)
    import mnist_lab.sweep as S
    started = []
    spec = S.check_spec({"space": {"lr": [0.01, 0.02]}, "n_jobs": 12, "sweep_dir": str(tmp_path / "sw"),
                         "params": {"dataset": "mnist_sample", "model": "linear"}})
    study, url = S.open_study(spec)
    S.start_workers, real = (lambda url, name, indices, *a: started.extend(indices) or []), S.start_workers
    S.work, real_work = (lambda *a: None), S.work
    try: S.run_sweep(study, url, 12)
    finally: S.start_workers, S.work = real, real_work
    assert started == [0, 1], started  # a worker per trial, not twelve



def test_values_that_pass_validation_then_fail_are_caught_before_a_folder(tmp_path):
    """max_steps 4 with onecycle, init_from weights holding NaN: one clear error before any folder is made, never a
    raw ZeroDivisionError or a run that fails at its first step."""
    root = str(tmp_path / "runs")
    with pytest.raises(ValueError, match="onecycle' needs at least 5 optimizer steps"):
        T.fit(T.TrainConfig(**{**TINY, "runs_root": root, "scheduler": "onecycle", "max_steps": 4}))
    with pytest.raises(ValueError, match=r"not 2 .*; 4500 training images .* at batch_size=2048 make 2 optimizer steps "
                                         r"an epoch.*a smaller batch_size \(-p batch_size 512\)"):  # the cause named
        T.fit(T.TrainConfig(**{**TINY, "runs_root": root, "scheduler": "onecycle", "steps_per_epoch": 0, "epochs": 1,
                               "batch_size": 2048}))
    good = T.fit(T.TrainConfig(**{**TINY, "runs_root": root, "name": "good"})).run_dir
    nan = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
           for k, v in torch.load(good / "model.pt", weights_only=True).items()}
    R.save_checkpoint(nan, tmp_path / "nan.pt")
    (tmp_path / "config.json").write_text((good / "config.json").read_text())
    with pytest.raises(ValueError, match="holds NaN or infinite values"):
        T.fit(T.TrainConfig(**{**TINY, "runs_root": root, "name": "nan", "init_from": str(tmp_path / "nan.pt")}))
    assert not (tmp_path / "runs" / "nan").exists() or not any((tmp_path / "runs" / "nan").iterdir())


def test_sweep_specs_and_commands_refuse_mistakes_at_once(tmp_path, capsys):
    """A key given twice in a sweep spec; --join of a mistyped path or another application's database; watch and
    stop of a folder that does not exist; a new project named like an installed package or nested in this one."""
    import sqlite3
    from types import SimpleNamespace
    from mnist_lab.cli import main
    def cli(*args):  # in this process: eight interpreters with torch would cost 10 s
        here = os.getcwd()
        os.chdir(tmp_path)
        try: code = main(list(args))
        finally: os.chdir(here)
        return SimpleNamespace(returncode=code, stderr=capsys.readouterr().err)
    (tmp_path / "twice.yaml").write_text("space: {lr: [0.1]}\nspace: {lr: [0.2]}\n")
    r = cli("sweep", "twice.yaml")
    assert r.returncode == 1 and "['space'] given twice" in r.stderr, r.stderr
    r = cli("sweep", "--join", f"sqlite:///{tmp_path}/typo/study.db", "s")
    assert r.returncode == 1 and "no such study database" in r.stderr and not (tmp_path / "typo").exists(), r.stderr
    with sqlite3.connect(tmp_path / "app.db") as db: db.execute("create table notes (x text)")
    r = cli("sweep", "--join", f"sqlite:///{tmp_path}/app.db", "s")
    assert r.returncode == 1 and "not an Optuna study database" in r.stderr, r.stderr
    with sqlite3.connect(tmp_path / "app.db") as db:
        assert [t for (t,) in db.execute("select name from sqlite_master where type='table'")] == ["notes"]
    for cmd in ("watch", "stop"):
        r = cli(cmd, "runs/typo")
        assert r.returncode == 1 and "runs/typo: no such run folder" in r.stderr, (cmd, r.stderr)
    r = cli("new", str(tmp_path / "torch"))
    assert r.returncode == 1 and "installed already" in r.stderr, r.stderr
    r = cli("new", str(ROOT / "nbs" / "sub"))
    assert r.returncode == 1 and "inside the project" in r.stderr and not (ROOT / "nbs" / "sub").exists(), r.stderr
    (tmp_path / "shared").mkdir(); (tmp_path / "shared").chmod(0o777)  # anyone could plant links in it first
    r = cli("new", str(tmp_path / "shared"))
    assert r.returncode == 1 and "writable by anyone" in r.stderr and not any((tmp_path / "shared").iterdir()), r.stderr
