"""The `mnist-lab` console script as installed; sweeps: checked specs, two workers, failing, pruned, interrupted and
resumed trials, both executors, optuna-dashboard."""
import json, os, subprocess, sys
from pathlib import Path
import optuna
import pytest
import mnist_lab.sweep as S
from mnist_lab.record import read_history
from mnist_lab.runs import runs_table
from conftest import pace_plugin, in_process

FAST = ["-p", "dataset", "mnist_sample", "-p", "model", "linear", "-p", "epochs", "1", "-p", "steps_per_epoch", "5",
        "-p", "scheduler", "none", "-p", "tensorboard", "False"]
MNIST_LAB = str(Path(sys.executable).parent / "mnist-lab")


def cli(*args, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([MNIST_LAB, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_help_everywhere(tmp_path, capsys):
    "The installed command answers --help; so does every subcommand (checked in-process: same parser)."
    r = cli("--help", cwd=tmp_path)
    assert r.returncode == 0 and "usage: mnist-lab" in r.stdout
    from mnist_lab.cli import main
    for cmd in ("train", "watch", "stop", "fit", "resume", "eval", "predict", "runs", "sweep", "new", "dashboard",
                "reproduce", "report"):
        with pytest.raises(SystemExit) as e: main([cmd, "--help"])
        assert e.value.code == 0 and f"usage: mnist-lab {cmd}" in capsys.readouterr().out, cmd


def test_commands_that_read_run_folders_start_without_torch(tmp_path):
    "--help, runs, watch and stop read files and send signals: they never import torch (1.2 s)."
    from mnist_lab.train import TrainConfig, fit
    run = fit(TrainConfig(dataset="mnist_sample", model="linear", epochs=1, steps_per_epoch=5, scheduler="none",
                          tensorboard=False, progress="none", runs_root=str(tmp_path / "runs"))).run_dir
    code = ("import sys\nfrom mnist_lab.cli import main\n"
            f"for args in [['--help'], ['runs', '--root', {str(tmp_path / 'runs')!r}], ['watch', {str(run)!r}], "
            f"['stop', {str(run)!r}]]:\n"
            "    try: main(args)\n    except SystemExit: pass\n"
            "print('torch loaded:', 'torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert "torch loaded: False" in r.stdout and run.name in r.stdout and "completed" in r.stdout, r.stdout + r.stderr


def test_train_runs_eval_resume(tmp_path, monkeypatch):
    """`mnist-lab train` in the foreground: the run's lines in the terminal, papermill's log (without the kernel's TCP
    warning: mnist_lab's kernels listen on loopback, behind a key) in the run folder; then runs, eval, resume and
    reproduce of that run (the commands that need no process of their own run in this one). Modules someone planted
    in the folder it runs in (a shared one) are imported by none of the processes it starts, nor by the kernel."""
    for name in ("psutil", "torch", "safetensors", "ipykernel_launcher"):  # each would record its import, then hand over
        (tmp_path / f"{name}.py").write_text("import importlib, os, sys\nopen(__file__ + '.imported', 'w').close()\n"
                                             "sys.path = [p for p in sys.path if p not in ('', os.getcwd())]\n"
                                             "del sys.modules[__name__]; sys.modules[__name__] = importlib.import_module(__name__)\n")
    r = cli("train", *FAST, "--name", "cli", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    (run,) = (tmp_path / "runs" / "cli").iterdir()
    assert "epoch   1/1" in r.stdout and "test accuracy" in r.stdout and "Executing" not in r.stdout + r.stderr
    assert r.stdout.count(f"run folder: {run}") == 1 and f"starting a kernel for {run}" in r.stdout, r.stdout
    log = (run / "papermill.log").read_text()
    assert "Output Notebook" in log and "without encryption" not in log + r.stderr
    assert (run / "notebook.ipynb").is_file() and not (run / "notebook.ipynb").is_symlink()  # the record itself
    assert json.loads((run / "status.json").read_text())["status"] == "completed"
    monkeypatch.chdir(tmp_path)
    code, out, err = in_process("runs")
    assert code == 0 and f"cli/{run.name}" in out and "completed" in out, out + err
    piped = subprocess.Popen([MNIST_LAB, "runs"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    piped.stdout.close()  # `mnist-lab runs | head`: its reader gone before it writes: no error, SIGPIPE's exit code
    assert (piped.wait(60), piped.stderr.read()) == (141, b"")
    code, out, err = in_process("runs", "runs/cli")  # a folder of runs given as report takes one: the same as --root
    assert code == 0 and run.name in out and "completed" in out, out + err
    code, out, err = in_process("eval", str(run))
    assert code == 0 and json.loads(out[out.index("{"):out.rindex("}") + 1])["accuracy"] > 0.3, out + err
    assert (run / "confusion.png").is_file() and f"confusion.png, predictions.png, mistakes.png in {run}" in out
    from mnist_lab.data import load_data  # a digit of the test set as a colour JPEG twice the size: fitted, classified
    from torchvision.io import write_jpeg
    from mnist_lab.data import fit_images
    digit = load_data("mnist_sample").x_test[:1]
    write_jpeg(fit_images(digit, channels=3, size=56)[0], str(tmp_path / "mine.jpg"))
    code, out, err = in_process("predict", str(run), str(tmp_path / "mine.jpg"), "--top", "2")
    assert code == 0 and out.startswith(f"{tmp_path / 'mine.jpg'}: ") and len(out.split(": ", 1)[1].split(", ")) == 2, out + err
    (tmp_path / "notes.png").write_text("no image")
    code, out, err = in_process("predict", str(run), str(tmp_path / "notes.png"), str(tmp_path / "mine.jpg"))
    assert code == 1 and f"{tmp_path / 'notes.png'}: not a readable image" in err, err  # a file that is no image: named...
    assert out.startswith(f"{tmp_path / 'mine.jpg'}: "), out  # ...and the image after it still classified
    (tmp_path / "photos" / "b").mkdir(parents=True); (tmp_path / "photos" / ".DS_Store").write_text("x")
    for name in ("photos/a.jpg", "photos/b/c.JPG", "photos/notes.txt"): (tmp_path / name).write_bytes((tmp_path / "mine.jpg").read_bytes())
    code, out, err = in_process("predict", str(run), str(tmp_path / "photos"))  # a folder: its images, in order
    assert code == 0 and [l.split(": ")[0] for l in out.splitlines()] == [str(tmp_path / p) for p in ("photos/a.jpg", "photos/b/c.JPG")], out + err
    (tmp_path / "photos" / "link.jpg").symlink_to(tmp_path / "mine.jpg"); (tmp_path / "photos").chmod(0o777)  # theirs to
    code, out, err = in_process("predict", str(run), "photos")  # change: a link there is not followed (named relative)
    assert code == 1 and "link.jpg: not a readable image (ValueError: a symbolic link below" in err and len(out.splitlines()) == 2, out + err
    r = cli("resume", str(run), "-p", "epochs", "2", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (run / "notebook-2.ipynb").is_file() and len((run / "metrics.jsonl").read_text().splitlines()) == 2
    shown = json.dumps(json.loads((run / "notebook-2.ipynb").read_text())["cells"])
    assert "| **model** | `'linear'` |" in shown and "| **epochs** | `2` |" in shown  # the config it trained with
    assert "git_dirty" in json.loads((run / "summary.json").read_text()) and (run / "packages.txt").is_file()
    code, out, err = in_process("resume", str(run), "-p", "epochs", "2")  # a completed run: nothing to do, not an error
    assert code == 0 and "completed" in out, out + err
    code, out, err = in_process("reproduce", str(run))  # the resumed run, trained again from scratch
    assert code == 0 and "test_accuracy:" in out and "differs" not in out and "setting: the same" in out, out + err
    assert not list(tmp_path.glob("*.imported")), list(tmp_path.glob("*.imported"))


@pytest.mark.parametrize("args,message", [
    (["train", "-p", "lrr", "0.1"], "mnist-lab train: error: unknown parameter(s) ['lrr'] ('lrr': did you mean 'lr'?)"),
    (["eval", "nowhere"], "mnist-lab eval: error:"),
    (["resume", "nowhere"], "mnist-lab resume: error: resume='nowhere': no such run folder"),
    (["sweep", "missing.yaml"], "mnist-lab sweep: error:"),
])
def test_errors_are_one_line_and_non_zero(tmp_path, monkeypatch, args, message):
    "The command's code in this process (the console script's own exit code and stderr: test_help_everywhere, train)."
    monkeypatch.chdir(tmp_path)
    code, _, err = in_process(*args)
    assert code != 0 and err.startswith(message) and err.count("\n") == 1, err
    assert f"(no project here, no settings.ini: relative paths are taken from {tmp_path})" in err, err
    assert not (tmp_path / "runs").exists()


def test_sweep_specs_are_checked_and_a_sweep_with_no_completed_trial_fails(tmp_path, capsys):
    import mnist_lab.cli
    spec = tmp_path / "sweep.yaml"
    for bad, message in [("space: {lr: [0.1]}\nseed: 3\n", "['seed'] not used by method 'grid'"),
                         ("method: random\nspace: {lr: {low: 0.1, high: 0.01}}\n", "low <= high"),
                         ("method: tpe\nspace: {lr: [0.1]}\nn_jobs: -1\n", "n_jobs=-1: must be in [0, 256]"),
                         ("method: optuna\nspace: {lr: [0.1]}\n", "method='optuna': choose one of grid, random, tpe")]:
        spec.write_text(bad)
        assert mnist_lab.cli.main(["sweep", str(spec)]) == 1 and message in capsys.readouterr().err, message
    assert not (tmp_path / "runs").exists()
    # no data there: refused before any trial starts, naming the folder
    nodata = {"dataset": "mnist", "data_dir": str(tmp_path / "none"), "download": False}
    spec.write_text(json.dumps({"method": "random", "space": {"seed": [0, 1]}, "n_trials": 2,
                                "sweep_dir": str(tmp_path / "sw"), "params": nodata}))
    assert mnist_lab.cli.main(["sweep", str(spec)]) == 1
    err = capsys.readouterr().err
    assert f"IDX files not found in {tmp_path / 'none'}" in err and not (tmp_path / "sw" / "trials").exists(), err
    # every trial fails at run time (the loss blows up): the sweep ends, says so, and exits 1
    blows_up = {"dataset": "mnist_sample", "model": "mlp", "optimizer": "sgd", "lr": 1e30, "epochs": 1,
                "steps_per_epoch": 5, "scheduler": "none", "tensorboard": False}
    spec.write_text(json.dumps({"method": "random", "space": {"seed": [0, 1]}, "n_trials": 2,
                                "sweep_dir": str(tmp_path / "sw2"), "params": blows_up}))
    assert mnist_lab.cli.main(["sweep", str(spec)]) == 1
    out, err = capsys.readouterr()
    assert "2 trials: 0 completed, 0 pruned, 2 failed" in out and "no trial completed" in err, out + err


def trial_logs(sweep_dir) -> str:
    "Every trial's status and log tail: what a failure message needs to be understood from CI's log."
    return "".join(f"\n--- {d.name}: {(d / 'status.json').read_text() if (d / 'status.json').is_file() else 'no status'}"
                   + "".join(f"\n{(d / f).read_text()[-1500:]}" for f in ("papermill.log", "train.log") if (d / f).is_file())
                   for d in sorted((Path(sweep_dir) / "trials").iterdir()))


def test_grid_with_two_workers_a_failing_trial_and_a_rerun(tmp_path, capsys):
    "Two local workers share a grid; a failing trial is recorded and the sweep goes on; a re-run trains nothing."
    base = {"dataset": "mnist_sample", "model": "mlp", "optimizer": "sgd", "epochs": 1, "steps_per_epoch": 5,
            "scheduler": "none", "tensorboard": False}
    # lr 1e30 blows up at the second step: a trial that raises at run time; the sweep must go on
    spec = tmp_path / "sweep.yaml"
    spec.write_text(json.dumps({"method": "grid", "space": {"lr": [1e-2, 1e30], "seed": [0, 1]}, "params": base,
                                "n_jobs": 2, "sweep_dir": str(tmp_path / "sw")}))
    r = cli("sweep", str(spec), cwd=tmp_path)
    logs = trial_logs(tmp_path / "sw")
    assert r.returncode == 0, r.stderr[-2000:] + logs
    assert "sweep sw: 4 trials: 2 completed, 0 pruned, 2 failed" in r.stdout, r.stdout[-2000:] + logs
    assert r.stdout.count("\ntrial ") + r.stdout.startswith("trial ") == 4  # a line per finished trial
    assert r.stdout.count("FAILED    FloatingPointError") == 2 and r.stdout.count("/sw/failed/") == 2, r.stdout
    assert "Traceback" not in r.stdout + r.stderr and "--retry-failed" in r.stdout  # the traceback is in its file
    table = runs_table(tmp_path / "sw" / "trials")
    assert sorted(table.run) == ["0000", "0001", "0002", "0003"], table.to_string() + logs
    assert sorted(table.status) == ["completed", "completed", "failed", "failed"], table.to_string() + logs
    shown = table[["status", "threads", "started", "error"]].to_string() + logs
    assert table[table.status == "failed"].error.str.contains("FloatingPointError").all(), shown
    assert table.threads.eq(max(1, (os.cpu_count() or 1) // 2)).all(), shown  # the workers share the cores
    study = optuna.load_study(study_name="sw", storage=f"sqlite:///{tmp_path}/sw/study.db")
    points = sorted((t.params["lr"], t.params["seed"]) for t in study.trials if not t.user_attrs.get("surplus"))
    assert points == [(1e-2, 0), (1e-2, 1), (1e30, 0), (1e30, 1)]  # every grid point once
    # running it again trains nothing; the same folder with another spec is refused, and nothing changes
    r = cli("sweep", str(spec), cwd=tmp_path)
    assert r.returncode == 0 and "4 trials: 2 completed, 0 pruned, 2 failed" in r.stdout, r.stdout + r.stderr
    assert "done already" in r.stdout and runs_table(tmp_path / "sw" / "trials").started.tolist() == table.started.tolist()
    r = cli("sweep", str(spec), "--retry-failed", cwd=tmp_path)  # the failed points run again (and fail again)
    assert r.returncode == 0 and "4 trials: 2 completed, 0 pruned, 2 failed" in r.stdout, r.stdout + r.stderr
    again = runs_table(tmp_path / "sw" / "trials").set_index("run").sort_index()
    before = table.set_index("run").sort_index()
    assert (again.started != before.started).tolist() == (before.status == "failed").tolist(), r.stdout
    spec.write_text(json.dumps({"space": {"lr": [0.5]}, "params": base, "sweep_dir": str(tmp_path / "sw")}))
    import mnist_lab.cli
    assert mnist_lab.cli.main(["sweep", str(spec)]) == 1
    assert "holds another sweep (it differs in n_trials, space)" in capsys.readouterr().err
    unchanged = optuna.load_study(study_name="sw", storage=f"sqlite:///{tmp_path}/sw/study.db")
    assert len(unchanged.trials) == len(study.trials)


def test_median_pruner_prunes_on_a_scripted_objective(tmp_path, monkeypatch):
    import math
    from types import SimpleNamespace
    def scripted_fit(cfg, on_epoch=None):
        # trials with lr near 1e-2 climb, the others stay low: the median rule must stop some of those
        good = abs(math.log10(cfg.lr) + 2) < 0.5
        for epoch in range(1, 6):
            on_epoch({"epoch": epoch, "val_accuracy": (0.5 + 0.1 * epoch) if good else 0.2})
        return SimpleNamespace(summary={"best": 1.0 if good else 0.2})
    monkeypatch.setattr(S, "fit", scripted_fit)
    # (a range: a point of a list drawn again is not trained again, so it could not be pruned)
    S.sweep({"lr": {"low": 1e-4, "high": 1e-1, "log": True}}, tmp_path / "search", method="random", n_trials=8, pruner="median",
            params={"dataset": "mnist_sample"})
    study = optuna.load_study(study_name="search", storage=f"sqlite:///{tmp_path}/search/study.db")
    states = [t.state for t in study.trials]
    assert len(states) == 8 and optuna.trial.TrialState.PRUNED in states
    assert abs(math.log10(study.best_params["lr"]) + 2) < 0.5  # a good lr won
    assert all(abs(math.log10(t.params["lr"]) + 2) >= 0.5 for t in study.trials if t.state.name == "PRUNED")  # bad ones


def test_joining_a_study_imports_no_plugin_it_names_unasked(tmp_path, monkeypatch, capsys):
    "A study in a shared database names plugins: `--join` refuses to import them unless the joiner names them."
    from types import SimpleNamespace
    canary = tmp_path / "canary"
    (tmp_path / "evil.py").write_text(f"open({str(canary)!r}, 'w').write('ran')\n")
    monkeypatch.setattr(S, "fit", lambda cfg, on_epoch=None: SimpleNamespace(summary={"best": 0.5}))
    S.sweep({"lr": [1e-2]}, tmp_path / "sw", params={"dataset": "mnist_sample", "plugins": str(tmp_path / "evil.py")})
    shared = tmp_path / "shared"; shared.mkdir(); shared.chmod(0o777)  # anyone could plant a study or trials there
    with pytest.raises(PermissionError, match=f"sweep_dir='{shared}/sw2': {shared}/sw2 is inside {shared}, which anyone"):
        S.sweep({"lr": [1e-2]}, shared / "sw2", params={"dataset": "mnist_sample"})
    (tmp_path / "spec.yaml").write_text(f"space: {{lr: [0.01]}}\nsweep_dir: {shared}/sw3\nparams: {{dataset: mnist_sample}}\n")
    import mnist_lab.cli  # the command too: refused before its study is made
    assert mnist_lab.cli.main(["sweep", str(tmp_path / "spec.yaml")]) == 1
    assert "which anyone may write" in capsys.readouterr().err
    assert not (shared / "sw2").exists() and not (shared / "sw3").exists()
    trials = tmp_path / "sw4" / "trials"; trials.mkdir(parents=True); trials.chmod(0o777)  # a trial's folder too
    with pytest.raises(PermissionError, match=f"a sweep's trial: {trials}/0000 is inside {trials}, which anyone"):
        S.train_slot({}, trials / "0000", {}, {}, None)  # refused before papermill writes its notebook there
    canary.unlink()  # the owner named the plugin: it ran for them; a joiner must not run it unasked
    r = cli("sweep", "--join", f"sqlite:///{tmp_path}/sw/study.db", "sw", cwd=tmp_path)
    assert r.returncode == 1 and "name them yourself (--plugins" in r.stderr, r.stderr
    assert not canary.exists()
    # whoever can write the shared database can rewrite the stored spec: code hidden in the space, or folders
    import mnist_lab.cli
    study = optuna.load_study(study_name="sw", storage=f"sqlite:///{tmp_path}/sw/study.db")
    spec = study.user_attrs["spec"]
    for change, message in [({"space": {"plugins": [str(tmp_path / "evil.py")]}}, "code and folders are not searched"),
                            ({"space": {"lr": [1e-2], "run_dir": ["/tmp/x"]}}, "code and folders are not searched"),
                            ({"params": {"dataset": "mnist_sample", "resume": "/tmp/x"}}, "the sweep decides where"),
                            # nor files of the joiner's that the study chooses: they must name them too
                            ({"params": {"dataset": "image_folder", "data_dir": "/home/you/private"}},
                             "name it yourself (--data-dir '/home/you/private')"),
                            ({"space": {"lr": [1e-2], "init_from": ["/home/you/model.pt"]}}, "searches init_from"),
                            # a false where a path goes: TrainConfig would read it as "False", a False.py here
                            ({"params": {"dataset": "mnist_sample", "plugins": False}}, "params plugins=False are no paths")]:
        study.set_user_attr("spec", {**spec, "params": {"dataset": "mnist_sample"}, **change})
        for plugins in ([], ["--plugins", str(tmp_path / "evil.py")]):  # in this process: an import would show
            assert mnist_lab.cli.main(["sweep", "--join", f"sqlite:///{tmp_path}/sw/study.db", "sw", *plugins]) == 1
            assert message in capsys.readouterr().err, change
            assert not canary.exists(), change
    with pytest.raises(RuntimeError, match="its spec changed after the sweep checked it"):  # changed after the check
        S.work(study, 1, expect="0" * 16)
    if os.geteuid() == 0:  # the study's sweep_dir is another user's folder: a joiner's results are not kept there
        study.set_user_attr("spec", {**spec, "params": {"dataset": "mnist_sample"}})
        os.chown(tmp_path / "sw", 65534, 65534)
        assert mnist_lab.cli.main(["sweep", "--join", f"sqlite:///{tmp_path}/sw/study.db", "sw"]) == 1
        assert "is another user's (uid 65534): keep this machine's trials in a folder of yours" in capsys.readouterr().err
        theirs = tmp_path / "theirs"; theirs.mkdir(); (tmp_path / "mine").mkdir()  # their link to a folder of yours:
        (theirs / "out").symlink_to(tmp_path / "mine"); os.chown(theirs, 65534, 65534)  # they chose where it leads
        study.set_user_attr("spec", {**spec, "params": {"dataset": "mnist_sample"}, "sweep_dir": str(theirs / "out")})
        assert mnist_lab.cli.main(["sweep", "--join", f"sqlite:///{tmp_path}/sw/study.db", "sw"]) == 1
        assert f"inside {theirs}, another user's folder" in capsys.readouterr().err and not list((tmp_path / "mine").iterdir())
        with pytest.raises(PermissionError, match="is another user's"):  # nor a sweep of yours there: its trials are
            S.sweep({"lr": [1e-2]}, tmp_path / "sw", params={"dataset": "mnist_sample"})  # resumed, their results read


def test_both_executors_train_the_same_trials_and_report_every_epoch(tmp_path):
    """The same cross-validated trial (2 folds) in-process and as papermill runs: the same metrics per fold, the same
    value in the study (the folds' mean), fold 0's epochs reported to the pruner."""
    base = {"dataset": "mnist_sample", "model": "mlp", "epochs": 2, "steps_per_epoch": 10, "tensorboard": False,
            "threads": 1}  # the same threads in both: bf16 sums split over 1 or 2 threads round differently
    studies = {}
    for executor in ("inprocess", "papermill"):
        S.sweep({"seed": [0]}, tmp_path / executor, params=base, executor=executor, folds=2)
        studies[executor] = optuna.load_study(study_name=executor, storage=f"sqlite:///{tmp_path}/{executor}/study.db")
    for fold in ("fold0", "fold1"):
        rows = {e: [{m: v for m, v in r.items() if m != "epoch_time"} for r in
                    read_history(tmp_path / e / "trials" / "0000" / fold)] for e in studies}
        assert len(rows["inprocess"]) == 2 and rows["inprocess"] == rows["papermill"], (fold, rows)
    assert (tmp_path / "papermill" / "trials" / "0000" / "fold1" / "notebook.ipynb").is_file()  # each run's notebook
    assert (tmp_path / "inprocess" / "trials" / "0000" / "fold0" / "train.log").is_file()
    values = {e: [(t.value, tuple(t.intermediate_values.items()), t.user_attrs["fold_values"]) for t in s.trials]
              for e, s in studies.items()}
    assert values["inprocess"] == values["papermill"] and len(values["inprocess"][0][1]) == 2, values
    (value, _, folds), = values["inprocess"]
    assert value == sum(folds) / 2 and folds[0] != folds[1], values


@pytest.mark.xdist_group("many_processes")  # see conftest.py
def test_ctrl_c_stops_a_sweep_cleanly_and_rerun_finishes_it(tmp_path):
    import signal, time
    from mnist_lab.record import run_status
    # 0.05 s of sleep a batch (`pace`) keeps each trial running for about 6 s of wall time on any machine, at little
    # CPU, so Ctrl-C lands while both train
    base = {"dataset": "mnist_sample", "model": "cnn", "width": 8, "amp": "off", "epochs": 12, "steps_per_epoch": 10,
            "scheduler": "none", "tensorboard": False, "plugins": str(pace_plugin(tmp_path, 0.05)), "augment": "pace"}
    spec = tmp_path / "sweep.json"
    # three points, two workers: the third is not started when Ctrl-C comes. The two retries take trial numbers
    # 3 and 4 on the re-run; the third point must still be trained (it once was pushed out as "surplus")
    spec.write_text(json.dumps({"space": {"seed": [0, 1, 2]}, "params": base, "n_jobs": 2, "executor": "papermill",
                                "sweep_dir": str(tmp_path / "sw")}))
    p = subprocess.Popen([MNIST_LAB, "sweep", str(spec)], cwd=tmp_path, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    trials = tmp_path / "sw" / "trials"
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until both workers are training
        epochs = [json.loads(s.read_text()).get("epoch", 0) for s in trials.glob("*/status.json") if s.stat().st_size]
        if len(epochs) == 2 and min(epochs) >= 1: break
        time.sleep(0.5)
    else: pytest.fail("the sweep did not start two trials")
    p.send_signal(signal.SIGINT)  # what Ctrl-C in the terminal does
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130 and "interrupted" in err, err[-2000:]
    statuses = [run_status(d) for d in trials.iterdir()]
    assert len(statuses) == 2 and all(s["status"] == "stopped" and "KeyboardInterrupt" in s["error"] for s in statuses)
    for s in statuses:  # no training process left behind
        with pytest.raises(ProcessLookupError): os.kill(s["pid"], 0)
    # running it again resumes the two interrupted trials from their checkpoints
    r = subprocess.run([MNIST_LAB, "sweep", str(spec)], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PACE_S": "0"})
    assert r.returncode == 0 and "3 trials: 3 completed, 0 pruned, 0 failed" in r.stdout, r.stdout + r.stderr
    resumed = [d for d in trials.iterdir() if (d / "notebook-2.ipynb").is_file()]
    assert len(resumed) == 2 and all("resuming" in (d / "papermill.log").read_text() for d in resumed)
    assert all(len((d / "metrics.jsonl").read_text().splitlines()) == 12 for d in trials.iterdir())
    assert sorted(json.loads((d / "config.json").read_text())["seed"] for d in trials.iterdir()) == [0, 1, 2]


@pytest.mark.xdist_group("many_processes")  # see conftest.py
def test_a_paused_worker_s_trial_is_taken_over_and_nothing_is_lost(tmp_path):
    """SIGSTOP one of two workers mid-trial for longer than the grace period: the other fails its trial as stale and
    queues it again; the retry waits for the run's lock, the paused worker, continued, finishes the run (its late
    reports and its end ignored), the retry records it. Both points complete, exit 0, no raw Optuna error."""
    import signal, time, optuna
    from mnist_lab.record import read_history, run_status
    base = {"dataset": "mnist_sample", "model": "linear", "epochs": 5, "steps_per_epoch": 10, "scheduler": "none",
            "tensorboard": False, "plugins": str(pace_plugin(tmp_path, 0.05)), "augment": "pace"}
    spec = tmp_path / "sweep.json"
    spec.write_text(json.dumps({"space": {"seed": [0, 1]}, "params": base, "n_jobs": 2, "sweep_dir": str(tmp_path / "sw")}))
    p = subprocess.Popen([MNIST_LAB, "sweep", str(spec)], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env={**os.environ, "MNIST_LAB_SWEEP_HEARTBEAT": "1", "MNIST_LAB_SWEEP_GRACE": "2"})
    url, paused = f"sqlite:///{tmp_path}/sw/study.db", None
    deadline = time.time() + 120
    while paused is None and time.time() < deadline:  # the worker of trial 0, once it has trained an epoch
        try: t = optuna.load_study(study_name="sw", storage=url).trials[0]
        except Exception: t = None  # no study.db, no study, no trial yet
        if t and "run_dir" in t.user_attrs and run_status(t.user_attrs["run_dir"]).get("epoch", 0) >= 1:
            paused, run_dir = int(t.user_attrs["worker"].rsplit(":", 1)[1]), Path(t.user_attrs["run_dir"])
        time.sleep(0.2)
    if not paused:  # say what the sweep was doing
        p.kill(); out, err = p.communicate()
        pytest.fail(f"the sweep did not train trial 0's first epoch in 120 s: {out[-2000:]} {err[-3000:]}")
    os.kill(paused, signal.SIGSTOP)
    time.sleep(6)  # the other worker ends its trial (2.5 s), then finds trial 0's heartbeat stale (2 s grace)
    os.kill(paused, signal.SIGCONT)
    out, err = p.communicate(timeout=180)
    assert p.returncode == 0 and "2 trials: 2 completed, 0 pruned, 0 failed" in out, out + err
    assert "Cannot tell" not in out + err and "Traceback" not in err, err[-3000:]
    trials = optuna.load_study(study_name="sw", storage=url).trials
    assert any(t.system_attrs.get("failed_trial") == 0 for t in trials), [(t.number, t.state) for t in trials]
    assert run_status(run_dir)["status"] == "completed" and [h["epoch"] for h in read_history(run_dir)] == list(range(1, 6))


def test_new_project_is_renamed_and_passes_its_notebook_tests(tmp_path):
    "`mnist-lab new` offline: renamed package, no runs/data/history; its module notebooks pass nbdev_test."
    import os
    shared = tmp_path / "shared"; shared.mkdir(); shared.chmod(0o777)  # anyone could swap the new folder for a link
    import contextlib, io, mnist_lab.cli
    with contextlib.redirect_stderr(said := io.StringIO()): assert mnist_lab.cli.main(["new", str(shared / "my_lab")]) == 1
    assert "which anyone may write" in said.getvalue() and not (shared / "my_lab").exists(), said.getvalue()
    r = cli("new", str(tmp_path / "my_lab"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    new = tmp_path / "my_lab"
    assert (new / "my_lab" / "train.py").is_file() and not (new / "mnist_lab").exists()
    assert not (new / ".git").exists() and list((new / "runs").iterdir()) == [new / "runs" / ".gitkeep"]
    assert "lib_name = my_lab" in (new / "settings.ini").read_text()
    assert "my-lab=my_lab.cli:main" in (new / "settings.ini").read_text()
    leftovers = [p for p in new.rglob("*") if p.is_file() and p.suffix != ".gz" and "mnist_lab" in p.read_text()]
    assert not leftovers, leftovers
    env = {**os.environ, "PYTHONPATH": str(new)}  # its package importable without installing it here
    nbdev_test = Path(sys.executable).parent / "nbdev_test"
    for nb in ("07_train",):  # the engine notebook imports every module the rename touched
        t = subprocess.run([str(nbdev_test), "--path", f"nbs/{nb}.ipynb"], cwd=new, env=env, capture_output=True,
                           text=True, timeout=300)
        assert t.returncode == 0, (nb, t.stdout[-1500:], t.stderr[-1500:])
    assert (new / "tests" / "test_engine.py").is_file()  # its tests came along (its notebook test above ran its engine)
    assert (new / "my_lab" / "__init__.py").read_text().startswith("__version__")
    # its pytest reads its own configuration, never one in a folder above (another user's pytest.ini, in a shared place)
    (tmp_path / "pytest.ini").write_text("[pytest]\naddopts = -p no_such_plugin_planted_above\n")
    t = subprocess.run([sys.executable, "-m", "pytest", "--co", "-q", "tests/test_engine.py"], cwd=new, env=env,
                       capture_output=True, text=True, timeout=120)
    assert t.returncode == 0 and "no_such_plugin" not in t.stdout + t.stderr, t.stdout[-1500:] + t.stderr[-1500:]
    # the plugins stub runs as it is: its dataset, model and metric by name, in a run of the new package
    code = ("from my_lab.train import fit, TrainConfig\n"
            "r = fit(TrainConfig(plugins='my_plugins.py', dataset='my_data', model='my_model', metrics='my_metric',"
            " monitor='max val_my_metric', epochs=1, steps_per_epoch=5, tensorboard=False, progress='none'))\n"
            "print(sorted(k for k in r.summary if k.startswith('test_')))")
    t = subprocess.run([sys.executable, "-c", code], cwd=new, env=env, capture_output=True, text=True, timeout=300)
    assert t.returncode == 0 and "'test_my_metric'" in t.stdout, t.stderr[-2000:]


def test_a_run_keeps_its_plugins_code_and_reproduce_says_when_it_changed(tmp_path):
    """A run keeps the source of its plugins as they ran (plugin-NAME beside its config, a digest in its summary):
    reproducing it with an edited model says the plugins differ, instead of "the same setting"."""
    plugin = tmp_path / "mine.py"
    plugin.write_text("from torch import nn\nfrom mnist_lab.model import register_model\n@register_model('mine')\n"
                      "def mine(n_classes=10, in_channels=1, image_size=(28, 28)):\n"
                      "    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size[0] * image_size[1], n_classes))\n")
    r = cli("fit", *FAST, "-p", "model", "mine", "--plugins", str(plugin), "-p", "progress", "none", "--name", "mine",
            cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    (run,) = (tmp_path / "runs" / "mine").iterdir()
    assert (run / "plugin-mine.py").read_text() == plugin.read_text()
    assert len(json.loads((run / "summary.json").read_text())["plugins_sha256"]) == 16
    plugin.write_text(plugin.read_text().replace("nn.Flatten()", "nn.Flatten(start_dim=1)"))  # the same model, new code
    r = cli("reproduce", str(run), "--plugins", str(plugin), cwd=tmp_path)
    assert "setting: plugins_sha256" in r.stdout and "the same" not in r.stdout, r.stdout + r.stderr
    first = (run / "plugin-mine.py").read_text()  # a resume with the edited plugin keeps what the first session ran
    r = cli("fit", "-p", "resume", str(run), "--plugins", str(plugin), "-p", "epochs", "2", cwd=tmp_path)  # in-process
    assert r.returncode == 0, r.stderr[-2000:]
    assert (run / "plugin-mine.py").read_text() == first and (run / "plugin-mine.py.2").read_text() == plugin.read_text()


def test_dashboard_serves_the_study_read_only_behind_a_token(tmp_path, monkeypatch):
    """`mnist-lab dashboard SWEEP_DIR` shows the study in optuna-dashboard; a neighbour on the same machine without
    the printed link gets 403, and even with it the study cannot be deleted (SQLite opened read-only)."""
    import re, urllib.request, urllib.error
    from types import SimpleNamespace
    monkeypatch.setattr(S, "fit", lambda cfg, on_epoch=None: SimpleNamespace(summary={"best": cfg.lr}))
    S.sweep({"lr": [1e-3, 1e-2, 1e-1]}, tmp_path / "search", params={"dataset": "mnist_sample"}, study_name="dash")
    p = subprocess.Popen([MNIST_LAB, "dashboard", str(tmp_path / "search")], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    try:
        line = p.stdout.readline()
        link = re.search(r"(http://127.0.0.1:\d+)/dashboard\?token=(\S+)", line)
        assert link and "(read-only)" in line, line + (p.stdout.read() if p.poll() is not None else "")
        base, token = link.groups()
        import socket  # a neighbour's connection that sends nothing keeps no one else waiting
        idle = socket.create_connection(("127.0.0.1", int(base.rsplit(":", 1)[1])))
        with pytest.raises(urllib.error.HTTPError, match="403"):
            urllib.request.urlopen(f"{base}/api/studies", timeout=10)
        body = urllib.request.urlopen(f"{base}/api/studies?token={token}", timeout=10).read().decode()
        assert re.search(r'"study_name": ?"dash"', body), body[:500]
        study_id = re.search(r'"study_id": ?(\d+)', body).group(1)
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(urllib.request.Request(f"{base}/api/studies/{study_id}?token={token}",
                                                          method="DELETE"), timeout=10)
        assert optuna.load_study(study_name="dash", storage=f"sqlite:///{tmp_path}/search/study.db").trials
        idle.close()
    finally:
        p.terminate(); p.wait(10)
