"""README.md and nbs/index.ipynb say the same thing; nbs/parameters.md documents every training parameter;
README's commands and examples work as written.

`python tests/test_readme.py` rewrites nbs/parameters.md from the parameters cell of nbs/train.ipynb,
then nbs/index.ipynb from README.md (one markdown cell per section)."""
import re
import nbformat
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

INDEX = ROOT / "nbs" / "index.ipynb"
PARAMETERS = ROOT / "nbs" / "parameters.md"


def readme_sections() -> list:
    text = (ROOT / "README.md").read_text()
    return [s.strip() for s in re.split(r"\n(?=## )", text)]


def parameter_table() -> str:
    nb = nbformat.read(ROOT / "nbs" / "train.ipynb", 4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    rows = ["| parameter | default | meaning |", "|---|---|---|"]
    for line in cell.source.splitlines():
        name, default, meaning = re.match(r"(\w+): \w+ = (.*?)  # (.*)", line).groups()
        rows.append(f"| `{name}` | `{default}` | {meaning.replace('|', '/')} |")
    return "\n".join(rows)


def parameters_page() -> str:
    return ("# Parameters\n\nEvery parameter of `nbs/train.ipynb`, in the order of its parameters cell, spelled as the fields of\n"
            "`mnist_lab.config.TrainConfig`; set one with `papermill ... -p name value`, `mnist-lab train -p name value`\n"
            "or `TrainConfig(name=value)`. `papermill --help-notebook nbs/train.ipynb` prints the same list with types.\n"
            "This page is written from the parameters cell by `python tests/test_readme.py`.\n\n" + parameter_table() + "\n")


def write_parameter_table():
    PARAMETERS.write_text(parameters_page())


def write_index():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(s) for s in readme_sections()])
    nb.metadata = {"kernelspec": {"display_name": "python3", "language": "python", "name": "python3"}}
    for i, c in enumerate(nb.cells): c["id"] = f"readme-{i:02d}"  # stable ids: no churn on rewrite
    nbformat.write(nb, INDEX)


def test_index_matches_readme():
    cells = [c.source.strip() for c in nbformat.read(INDEX, 4).cells if c.cell_type == "markdown"]
    assert cells == readme_sections(), "README.md changed: run `python tests/test_readme.py` to sync nbs/index.ipynb"


def test_parameters_page_documents_every_parameter():
    from mnist_lab.config import TrainConfig
    from dataclasses import fields
    page = PARAMETERS.read_text()
    missing = [f.name for f in fields(TrainConfig) if f"| `{f.name}` |" not in page]
    assert not missing, f"nbs/parameters.md lacks {missing}"
    assert page == parameters_page(), "nbs/parameters.md differs from train.ipynb: run python tests/test_readme.py"
    assert f"[all {len(fields(TrainConfig))}](nbs/parameters.md)" in (ROOT / "README.md").read_text()


def test_bench_readme_commands_exist():
    "Each `python bench/X.py --flag` that bench/README.md cites names a script that compiles and takes that flag."
    cited = re.findall(r"`python (bench/\w+\.py)([^`]*)`", (ROOT / "bench" / "README.md").read_text())
    assert len({script for script, _ in cited}) >= 7, cited
    for script, flags in cited:
        source = (ROOT / script).read_text()
        compile(source, script, "exec")
        for flag in re.findall(r"--[\w-]+", flags): assert f'"{flag}"' in source, (script, flag)

if __name__ == "__main__":
    write_parameter_table()
    write_index()


def test_fashion_command_is_the_benchmarked_recipe():
    "README's Fashion-MNIST papermill command sets what bench/fashion_93.py measures, parameter for parameter."
    import shlex, sys
    from dataclasses import asdict
    from mnist_lab.train import TrainConfig
    sys.path.insert(0, str(ROOT / "bench"))
    from fashion_93 import RECIPE
    readme = (ROOT / "README.md").read_text().replace("\\\n", " ")
    line = next(l for l in readme.splitlines() if l.startswith("papermill nbs/train.ipynb runs/fashion.ipynb"))
    words = shlex.split(line)[3:]  # after papermill, the notebook and the output
    assert words[::3] == ["-p"] * (len(words) // 3), words
    ours = TrainConfig.from_params(**dict(zip(words[1::3], words[2::3])))
    assert asdict(ours) == asdict(TrainConfig.from_params(**RECIPE, dataset="fashion_mnist", data_dir=ours.data_dir))


def test_own_images_command_is_valid():
    "README's image-folder papermill command names parameters and values that TrainConfig accepts."
    import shlex
    from mnist_lab.train import TrainConfig
    readme = (ROOT / "README.md").read_text().replace("\\\n", " ")
    line = next(l for l in readme.splitlines() if l.startswith("papermill nbs/train.ipynb runs/mine.ipynb"))
    words = shlex.split(line)[3:]
    cfg = TrainConfig.from_params(**dict(zip(words[1::3], words[2::3])))
    assert (cfg.dataset, cfg.monitor, cfg.class_weights) == ("image_folder", "max val_f1_macro", "balanced")


def test_quickstart_command_as_written(tmp_path):
    """README's training command, run as a user runs it (from a folder with runs/): ~98% on the bundled sample; the
    terminal shows what README shows, and the run folder links the executed notebook relatively."""
    import json, os, subprocess, sys
    readme = (ROOT / "README.md").read_text()
    assert "papermill nbs/train.ipynb runs/quick.ipynb -p epochs 4\n" in readme
    (tmp_path / "runs").mkdir()
    (tmp_path / "nbs").symlink_to(ROOT / "nbs")
    r = subprocess.run([sys.executable, "-m", "papermill", "nbs/train.ipynb", "runs/quick.ipynb", "-p", "epochs", "4"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    (run,) = (tmp_path / "runs" / "run").iterdir()
    for line in ("dataset: ", f"run folder: {run}", "epoch   1/4", "epoch   4/4", "test accuracy"):
        assert line in r.stdout, line  # papermill without --log-output: the kernel says them on papermill's stdout
    assert "Unable to parse" not in r.stderr
    assert not os.path.isabs(os.readlink(run / "notebook.ipynb"))  # a relative link survives moving the project
    s = json.loads((run / "summary.json").read_text())
    assert s["dataset"] in ("mnist_sample", "mnist") and s["test_accuracy"] >= 0.97, s["test_accuracy"]
    if s["dataset"] == "mnist_sample":  # offline, as README shows it: said loudly, with the sample's classes
        assert "USING THE BUNDLED SAMPLE" in r.stdout and "training images per class: 0 479, 1 563" in r.stdout
    assert (run / "learning_curves.png").is_file() and (run / "mistakes.png").is_file()


def test_readme_model_example_runs(tmp_path):
    "The register_model example of README's Models section, then the fit call it shows."
    readme = (ROOT / "README.md").read_text()
    code = readme.split("Registries are plain dicts filled by a decorator")[1].split("```python\n")[1].split("```")[0]
    ns = {}
    exec(code, ns)
    from mnist_lab.train import TrainConfig, fit
    from mnist_lab.model import MODELS
    try:
        res = fit(TrainConfig(model="tiny", model_args={"hidden": 64}, dataset="mnist_sample", epochs=1,
                              runs_root=str(tmp_path), tensorboard=False, progress="none"))
        assert res.summary["test_accuracy"] > 0.8
    finally: MODELS.pop("tiny", None)
