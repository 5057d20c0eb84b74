"""JupyterLab driven by a real browser (Debian's Chromium through playwright), as a user works in it.

Each test copies the project's notebooks into a temporary project, starts JupyterLab there on loopback with
a token, and clicks through the menus. Screenshots land in runs/screenshots/ (git-ignored); README's
JupyterLab pictures are copies of them. In CI (MNIST_LAB_REQUIRE_BROWSER=1) a missing browser fails."""
import json, os, shutil, signal, socket, subprocess, sys, time
from pathlib import Path
import nbformat
import pytest
from conftest import ROOT, pace_plugin

pytestmark = pytest.mark.xdist_group("many_processes")  # see conftest.py

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = ROOT / "runs" / "screenshots"
# what a person would pick for a quick look: small, offline, a few seconds per epoch on 2 cores
SMALL = {"dataset": '"mnist_sample"', "epochs": "2", "tensorboard": "False"}


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).is_file():
        if os.environ.get("MNIST_LAB_REQUIRE_BROWSER"): pytest.fail(f"no Chromium at {CHROMIUM}")
        pytest.skip("needs Debian's chromium (apt-get install chromium)")
    from playwright.sync_api import sync_playwright
    pw = sync_playwright().start()
    b = pw.chromium.launch(executable_path=CHROMIUM, args=[
        "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"])
    yield b
    b.close()
    pw.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Lab:
    "A JupyterLab server on loopback, serving `root`, with its own config and runtime folders."
    def __init__(self, root: Path, **env):
        self.root, self.port, self.token = root, free_port(), "t" + os.urandom(8).hex()
        env = {**os.environ, "JUPYTER_CONFIG_DIR": str(root / ".jupyter"), "JUPYTER_RUNTIME_DIR": str(root / ".rt"),
               "JUPYTERLAB_WORKSPACES_DIR": str(root / ".ws"), **env}
        settings = root / ".lab-settings" / "@jupyterlab" / "notebook-extension"
        settings.mkdir(parents=True, exist_ok=True)  # render every cell, so the checks see every output
        (settings / "tracker.jupyterlab-settings").write_text('{"windowingMode": "none"}')
        news = root / ".lab-settings" / "@jupyterlab" / "apputils-extension"
        news.mkdir(parents=True, exist_ok=True)  # no "get Jupyter news?" toast over the screenshots
        (news / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')
        self.log = open(root / f"lab-{self.port}.log", "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={self.port}",
             f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={root}", "--LabApp.news_url=None",
             "--ServerApp.allow_root=True",
             f"--LabApp.user_settings_dir={root / '.lab-settings'}"], cwd=root, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        for _ in range(300):
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError: time.sleep(0.1)
        raise RuntimeError(f"JupyterLab did not start: {(root / f'lab-{self.port}.log').read_text()[-2000:]}")

    def url(self, path: str) -> str: return f"http://127.0.0.1:{self.port}/lab/tree/{path}?token={self.token}"

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)  # as a person stops `jupyter lab` (Ctrl-C twice)
        self.proc.wait(60)
        self.log.close()


@pytest.fixture
def project(tmp_path):
    "A throwaway project: the notebooks and settings.ini (so runs land in its own runs/), small train defaults."
    proj = tmp_path / "project"
    shutil.copytree(ROOT / "nbs", proj / "nbs", ignore=shutil.ignore_patterns("*.ipynb_checkpoints"))
    shutil.copy(ROOT / "settings.ini", proj)
    nb = nbformat.read(proj / "nbs" / "train.ipynb", 4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    lines = cell.source.splitlines()
    for i, line in enumerate(lines):  # what a person does: edit the parameters cell
        name, rest = line.split(":", 1)
        if name in SMALL: lines[i] = f"{name}:{rest.split('=')[0]}= {SMALL[name]}  # {rest.split('  # ')[1]}"
    cell.source = "\n".join(lines)
    nbformat.write(nb, proj / "nbs" / "train.ipynb")
    return proj


def accept_kernel(page, seconds=5.0):
    "JupyterLab may ask which kernel to start: take the one it proposes (Python 3), as a person clicks Select."
    t0 = time.time()
    while time.time() - t0 < seconds:
        dialog = page.locator(".jp-Dialog", has_text="Select Kernel")
        if dialog.count():
            dialog.locator(".jp-mod-accept").click()
            return
        time.sleep(0.2)


PANEL = ".jp-NotebookPanel:not(.lm-mod-hidden)"  # the notebook in the tab in front


def open_notebook(page, lab, path):
    page.goto(lab.url(path))
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    accept_kernel(page)


def run_all(page):
    "Run > Run All Cells, through the menu."
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator("li.lm-Menu-item[data-command='runmenu:run-all']").click()
    accept_kernel(page, 0.5)


def wait_done(page, timeout=240):
    "Until every code cell has an execution count and none is queued or running."
    t0 = time.time()
    while time.time() - t0 < timeout:
        prompts = page.locator(f"{PANEL} .jp-CodeCell .jp-InputPrompt").all_inner_texts()
        if prompts and all(p.strip().startswith("[") and p.strip()[1:-2].strip().isdigit() for p in prompts):
            return
        time.sleep(0.5)
    raise TimeoutError(f"cells did not finish: {prompts}")


def outputs(page, mime) -> list:
    return page.locator(f"{PANEL} .jp-OutputArea-output[data-mime-type='{mime}']").all_inner_texts()


def shot(page, name):
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=False)


def test_tutorial_and_train_notebook_run_all_twice_in_jupyterlab(browser, project):
    lab = Lab(project)
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        open_notebook(page, lab, "nbs/t1_explore_data.ipynb")
        run_all(page)
        wait_done(page)
        assert outputs(page, "application/vnd.jupyter.stderr") == []
        assert outputs(page, "application/vnd.jupyter.error") == []
        assert page.locator(f"{PANEL} .jp-RenderedImage img").count() >= 3
        shot(page, "t1_explore_data")

        open_notebook(page, lab, "nbs/train.ipynb")
        for attempt in (1, 2):  # Run All twice in one kernel: the second run must not trip on the first's names
            run_all(page)
            page.wait_for_selector(".widget-hprogress", timeout=120_000)  # tqdm's bar as a widget, not text
            if attempt == 1: shot(page, "train_progress_widget")
            wait_done(page)
            assert outputs(page, "application/vnd.jupyter.error") == [], f"run {attempt}"
            assert outputs(page, "application/vnd.jupyter.stderr") == [], f"run {attempt}"
            assert page.locator(f"{PANEL} .jp-RenderedImage img").count() >= 4
            assert page.locator(f"{PANEL} .widget-hprogress").count() == 0  # each bar's output went when it closed
        page.locator(f"{PANEL} .jp-RenderedImage img").first.scroll_into_view_if_needed()
        shot(page, "train_results")
        saved_before = (project / "nbs" / "train.ipynb").stat().st_mtime
        page.keyboard.press("Control+s")  # saved, then reopened tomorrow: no bar's widget that cannot be found
        for _ in range(100):
            if (project / "nbs" / "train.ipynb").stat().st_mtime != saved_before: break
            time.sleep(0.1)
        time.sleep(0.5)
        saved = nbformat.read(project / "nbs" / "train.ipynb", as_version=4)
        mimes = [m for c in saved.cells for o in c.get("outputs", []) for m in o.get("data", {})]
        assert "image/png" in mimes and "application/vnd.jupyter.widget-view+json" not in mimes, mimes
        runs = sorted((project / "runs" / "run").iterdir())
        assert len(runs) == 2 and not (project / "nbs" / "runs").exists()  # the project's runs/, not nbs/runs/
        assert all(json.loads((r / "status.json").read_text())["status"] == "completed" for r in runs)
    finally:
        lab.stop()


LAUNCH = """from mnist_lab.launch import launch
run = launch(dataset="mnist_sample", model="cnn", epochs=10, steps_per_epoch=20, name="detached",
             tensorboard=False, seed=3, threads=1, plugins="pace.py", augment="pace")"""
CELL_MODEL = """from mnist_lab.model import register_model
@register_model("cell_model")
def cell_model(n_classes: int = 10): return None
launch(model="cell_model")"""


def test_detached_run_outlives_browser_and_server_then_is_stopped_resumed_and_watched(browser, project):
    """Launched from a cell, the run outlives the browser and the server; the next day, from another notebook, it
    is stopped, resumed in its own folder and watched to the end, with the same numbers as a run in the
    foreground. A model registered in a cell is refused by `launch` in the cell, with the fix."""
    pace_plugin(project, 0.05)  # ~10 s of idle wall time over the run: it is still training when stopped
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(LAUNCH), nbformat.v4.new_code_cell(CELL_MODEL)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, project / "nbs" / "launch.ipynb")
    lab = Lab(project)
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        open_notebook(page, lab, "nbs/launch.ipynb")
        run_all(page)
        wait_done(page, 60)
        text = " ".join(page.locator(f"{PANEL} .jp-OutputArea-output").all_inner_texts())
        assert "launched:" in text and "registered in this notebook" in text and "%%writefile" in text, text
        page.close()  # the browser tab goes...
    finally:
        lab.stop()  # ...and the Jupyter server with its kernels
    (run_dir,) = (project / "runs" / "detached").iterdir()

    watch_nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        f"from mnist_lab.launch import watch, stop, resume\nrun = 'runs/detached/{run_dir.name}'\n"
        "stopped = stop(run)\nrun = resume(run, plugins='pace.py')  # a run's plugins are named again\n"
        "s = watch(run, every=0.5)\nstopped['status'], s['status'], s['epoch']")])
    watch_nb.metadata = nb.metadata
    nbformat.write(watch_nb, project / "nbs" / "watch.ipynb")
    lab = Lab(project, PACE_S="0")  # the next day: a new server, a new kernel, the same run; resumed at full speed
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        open_notebook(page, lab, "nbs/watch.ipynb")
        run_all(page)
        page.locator(f"{PANEL} .jp-OutputArea-output", has_text="running: epoch").first.wait_for(timeout=120_000)
        page.wait_for_selector(".jp-RenderedImage img", timeout=60_000)  # learning curves while it runs
        shot(page, "watch_running")
        wait_done(page, 240)
        text = " ".join(page.locator(f"{PANEL} .jp-OutputArea-output").all_inner_texts())
        assert "completed: epoch 10/10" in text and "('stopped', 'completed', 10)" in text, text
        shot(page, "watch_completed")
    finally:
        lab.stop()
    assert [p.name for p in (project / "runs" / "detached").iterdir()] == [run_dir.name]  # resumed in its folder

    # the same config trained in the foreground gives the same result: detaching changes nothing
    from mnist_lab.train import TrainConfig, fit
    # (with the same number of threads: bf16 sums split over 1 or 2 threads round differently)
    os.environ["PACE_S"] = "0"  # the same batches, at full speed
    try: fg = fit(TrainConfig(dataset="mnist_sample", model="cnn", epochs=10, steps_per_epoch=20, tensorboard=False,
                              seed=3, threads=1, runs_root=str(project / "fg"), progress="none",
                              plugins=str(project / "pace.py"), augment="pace"))
    finally: del os.environ["PACE_S"]
    detached = json.loads((run_dir / "summary.json").read_text())
    assert detached["test_accuracy"] == fg.summary["test_accuracy"]
    assert [json.loads(l)["val_loss"] for l in (run_dir / "metrics.jsonl").read_text().splitlines()] == \
        [h["val_loss"] for h in fg.history]


def test_html_report_opens_in_chromium_with_its_plots(browser, tmp_path):
    """`mnist-lab report RUN` writes one self-contained page: Chromium shows its plots, decoded, from the file alone,
    and runs nothing of the run folder's notebook."""
    from mnist_lab.train import TrainConfig, fit
    run = fit(TrainConfig(dataset="mnist_sample", model="linear", epochs=1, steps_per_epoch=5, tensorboard=False,
                          progress="none", runs_root=str(tmp_path))).run_dir
    # the folder may be someone else's: its notebook's scripts and handlers must not run where the page is opened
    payload = "window.pwned = (window.pwned || 0) + 1"
    hostile = {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [
        {"cell_type": "markdown", "id": "md", "metadata": {}, "source": f'<img src="x" onerror="{payload}">'
                                                                          f'<svg onload="{payload}"></svg>'},
        {"cell_type": "code", "id": "out", "metadata": {}, "execution_count": 1, "source": "1", "outputs": [
            {"output_type": "display_data", "metadata": {}, "data": {
                "text/html": f"<script>{payload}</script><iframe srcdoc='<script>parent.{payload}</script>'></iframe>",
                "application/javascript": payload, "text/markdown": f"<script>{payload}</script>"}}]},
        {"cell_type": "raw", "id": "raw", "metadata": {"format": "text/html"}, "source": f"<script>{payload}</script>"}]}
    (run / "notebook.ipynb").write_text(json.dumps(hostile))
    r = subprocess.run([str(Path(sys.executable).parent / "mnist-lab"), "report", str(run)], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0 and "report.html" in r.stdout, r.stderr[-2000:]
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto((run / "report.html").as_uri())
    page.wait_for_timeout(500)  # an onerror or onload fires after the load
    assert page.evaluate("() => window.pwned") is None and not dialogs
    assert "window.pwned" in page.inner_text("body")  # shown as text
    widths = page.eval_on_selector_all("img", "imgs => imgs.map(i => i.complete ? i.naturalWidth : 0)")
    assert len(widths) >= 3 and sorted(widths)[-3] > 100, widths  # the three plots, decoded
    assert "95% interval" in page.inner_text("body")
    shot(page, "html_report")
    page.close()

