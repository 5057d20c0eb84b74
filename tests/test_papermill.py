"train.ipynb run headlessly through papermill's CLI, as a user runs it on a server."
import ast, gc, inspect, json, re, subprocess, sys
from pathlib import Path
from dataclasses import fields
import nbformat
from conftest import ROOT, papermill
from mnist_lab.train import TrainConfig, fit

TINY = [("dataset", "mnist_sample"), ("model", "linear"), ("epochs", 2), ("batch_size", 256),
        ("download", False)]


def parameters_cell():
    nb = nbformat.read(ROOT / "nbs" / "train.ipynb", as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, "train.ipynb needs exactly one cell tagged 'parameters'"
    return cells[0].source


def config_lines() -> list:
    "TrainConfig's field lines (`name: type = default  # meaning`), as the parameters cell must spell them."
    src = inspect.getsource(TrainConfig).splitlines()
    return [l[4:].replace("field(default_factory=dict)", "{}") for l in src if re.match(r"    \w+: \w+ = ", l)]


def test_parameters_cell_is_the_config_spelled_out():
    # one spelling: a JupyterLab autosave of an edited default, or a field added to only one side, fails here
    assert parameters_cell().splitlines() == config_lines(), (
        "nbs/train.ipynb's parameters cell must equal TrainConfig's fields line for line: "
        "run `python tests/test_papermill.py` to rewrite it from TrainConfig")


def test_parameters_cell_defaults_match_config():
    names = {node.target.id for node in ast.parse(parameters_cell()).body}
    assert names == {f.name for f in fields(TrainConfig)}
    ns = {}
    exec(parameters_cell(), ns)
    assert TrainConfig.from_globals(ns) == TrainConfig()


def test_help_notebook_lists_every_parameter_with_type_and_no_parse_warning():
    r = subprocess.run([sys.executable, "-m", "papermill", "--help-notebook", str(ROOT / "nbs" / "train.ipynb")],
                       capture_output=True, text=True)
    assert "Unable to parse" not in r.stdout + r.stderr and "Unknown type" not in r.stdout
    for f in fields(TrainConfig):
        assert re.search(rf"^  {f.name}: {f.type.__name__} \(default ", r.stdout, re.M), f.name


def test_papermill_end_to_end(request):
    """One papermill run as people type it: from a project's subfolder (nbs/), options before the paths, a relative
    output. The run lands in the project's runs/ (not nbs/runs/) with its whole record, linked to its notebook, and
    `mnist-lab runs` from the subfolder lists it. Its data (MNIST's IDX files in the project's data/) is readable by
    no one else: the run folder and the notebook outside it, whose plots show the digits, are closed to them too."""
    import os, shutil, tempfile
    project = Path(tempfile.mkdtemp()); project.chmod(0o755)  # where others may look (pytest's tmp_path is closed)
    request.addfinalizer(lambda: shutil.rmtree(project))
    (project / "settings.ini").write_text("[DEFAULT]\n")  # the project's root
    (project / "nbs").mkdir(); (project / "data").mkdir(mode=0o700)
    for f in (ROOT / "mnist_lab" / "sample").glob("*.gz"): shutil.copy(f, project / "data")
    options = [a for k, v in (*TINY[1:], ("dataset", "mnist"), ("lr", 0.01)) for a in ("-p", k, str(v))]
    r = subprocess.run([sys.executable, "-m", "papermill", *options, "--no-progress-bar", str(ROOT / "nbs" / "train.ipynb"),
                        "out.ipynb"], cwd=project / "nbs", capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    out = project / "nbs" / "out.ipynb"
    nb = nbformat.read(out, as_version=4)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert "lr = 0.01" in injected[0].source
    text = json.dumps([c.get("outputs", []) for c in nb.cells])
    assert "epoch   2/2" in text and "test accuracy" in text and "image/png" in text
    assert "| lr | `0.01` |" in text  # the resolved config is shown
    assert "it/s" not in text and "s/it" not in text  # per-epoch lines, no per-batch progress bars
    (run,) = (project / "runs" / "run").iterdir()
    assert not (project / "nbs" / "runs").exists()
    for f in ("config.json", "metrics.jsonl", "model.pt", "last.pt", "best.pt", "summary.json",
              "status.json", "learning_curves.png", "confusion.png", "predictions.png", "mistakes.png"):
        assert (run / f).is_file(), f
    assert (run / "tb").is_dir()
    assert (run / "notebook.ipynb").resolve() == out.resolve()  # the executed notebook is part of the record
    assert "not readable by its group and others: nor is this run folder" in text
    assert (run.stat().st_mode & 0o077, out.stat().st_mode & 0o077) == (0, 0), (oct(run.stat().st_mode), oct(out.stat().st_mode))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["dataset"] == "mnist" and summary["test_accuracy"] > 0.8
    assert json.loads((run / "config.json").read_text())["lr"] == 0.01
    assert json.loads((run / "status.json").read_text())["status"] == "completed"
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2
    r = subprocess.run([str(Path(sys.executable).parent / "mnist-lab"), "runs"], cwd=project / "nbs",
                       capture_output=True, text=True, timeout=120)
    assert "completed" in r.stdout and "more columns hidden" in r.stdout, r.stdout + r.stderr
    (project / "data").rename(project / "moved")  # the data moved since (or the run copied elsewhere): eval is told
    import contextlib, io, mnist_lab.cli
    with contextlib.redirect_stdout(io.StringIO()) as out:
        assert mnist_lab.cli.main(["eval", str(run), "--data-dir", str(project / "moved")]) == 0
    assert json.loads(out.getvalue()[:out.getvalue().index("}") + 1])["accuracy"] == summary["test_accuracy"]


def test_headless_kernel_freezes_imports_out_of_the_garbage_collector(tmp_path):
    """papermill's kernel is one run; JupyterLab, scripts and this pytest process are left alone. The kernels mnist_lab
    starts (`mnist-lab train`, `launch`, sweeps) keep a PYTHONPATH that names their own folder (PYTHONPATH=. in a
    checkout): ipykernel_launcher dropped it, and another install of mnist_lab was imported."""
    import os
    from mnist_lab.process import PAPERMILL, python_code
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "import gc, os, sys, mnist_lab.train  # as nbs/train.ipynb\nassert gc.get_freeze_count() > 10_000, gc.get_freeze_count()\n"
        "assert sys.path[0] == os.getcwd() and 'PYTHONSAFEPATH' not in os.environ, sys.path")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "in.ipynb")
    r = subprocess.run(python_code(PAPERMILL, "--engine", "mnist_lab", tmp_path / "in.ipynb", tmp_path / "out.ipynb"),
                       cwd=tmp_path, capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": "."})  # as in a checkout
    assert r.returncode == 0, r.stderr[-3000:]
    assert gc.get_freeze_count() == 0


def test_nohup_run_survives_the_terminal_closing(tmp_path):
    "Closing a terminal sends SIGHUP to its processes: a papermill run under nohup finishes anyway."
    import os, signal, subprocess, sys, time
    (tmp_path / "runs").mkdir()
    p = subprocess.Popen(["nohup", sys.executable, "-m", "papermill", str(ROOT / "nbs" / "train.ipynb"), "runs/long.ipynb",
                          *[a for k, v in TINY for a in ("-p", k, str(v))], "-p", "epochs", "4", "-p", "run_dir", "runs/long"],
                         cwd=tmp_path, stdout=open(tmp_path / "runs" / "long.log", "w"), stderr=subprocess.STDOUT,
                         start_new_session=True)  # its own session, as a terminal's job would be
    deadline = time.time() + 120
    while not (tmp_path / "runs" / "long" / "status.json").exists():
        assert time.time() < deadline and p.poll() is None, (tmp_path / "runs" / "long.log").read_text()[-2000:]
        time.sleep(0.2)
    os.killpg(p.pid, signal.SIGHUP)  # the terminal goes away
    assert p.wait(timeout=300) == 0
    assert json.loads((tmp_path / "runs" / "long" / "status.json").read_text())["status"] == "completed"


if __name__ == "__main__":  # rewrite the parameters cell from TrainConfig
    nb = nbformat.read(ROOT / "nbs" / "train.ipynb", as_version=4)
    next(c for c in nb.cells if "parameters" in c.metadata.get("tags", [])).source = "\n".join(config_lines())
    nbformat.write(nb, ROOT / "nbs" / "train.ipynb")


def test_an_output_notebook_in_a_folder_others_may_write_is_refused(tmp_path):
    "papermill rewrites its output notebook by path after every cell: in a folder anyone may write, a link could take its place."
    shared = tmp_path / "shared"; shared.mkdir(); shared.chmod(0o777)
    r = papermill(shared / "out.ipynb", *TINY[:2], ("epochs", 1), ("steps_per_epoch", 2), ("scheduler", "none"),
                  ("tensorboard", False), ("runs_root", tmp_path / "runs"), cwd=tmp_path)
    assert r.returncode != 0 and "papermill's output notebook" in r.stderr and "which anyone may write" not in r.stderr
    assert f"{shared} is writable by anyone" in r.stderr, r.stderr[-2000:]


def test_one_rule_for_defaults_a_saved_edit_of_the_parameters_cell(tmp_path):
    """A parameters cell saved with lr edited (a JupyterLab autosave): papermill refuses it before any work, naming
    the way out (launch, the CLI and sweeps pass only what they are given, so the kernel refuses it for them too); a
    run trained here is then resumed through the edited notebook, which compares only what it is given."""
    nb = nbformat.read(ROOT / "nbs" / "train.ipynb", as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    cell.source = cell.source.replace("lr: float = 1e-2", "lr: float = 0.05")
    edited = tmp_path / "edited.ipynb"
    nbformat.write(nb, edited)
    tiny = [*TINY[:2], ("epochs", 1), ("steps_per_epoch", 5), ("scheduler", "none"), ("tensorboard", False)]
    r = papermill(tmp_path / "refused.ipynb", *tiny, cwd=tmp_path, nb=edited)
    assert r.returncode != 0 and "pass -p lr 0.05" in r.stderr, r.stderr[-2000:]
    assert not (tmp_path / "runs").exists()  # refused before any folder was made
    run = fit(TrainConfig(**dict(tiny), progress="none", runs_root=str(tmp_path / "runs"))).run_dir  # defaults
    r = papermill(tmp_path / "resumed.ipynb", ("resume", run), ("epochs", 2), cwd=tmp_path, nb=edited)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((run / "status.json").read_text())["epoch"] == 2
    assert json.loads((run / "config.json").read_text())["lr"] == 0.01
