"""The MLflow export against a real MLflow server and its UI in Chromium, both on loopback. Needs the `mlflow` extra
(pip install -e ".[mlflow]"); CI installs it and sets MNIST_LAB_REQUIRE_MLFLOW, so it never skips there."""
import json, os, signal, subprocess, sys, time, urllib.request
from pathlib import Path
import pytest
from conftest import in_process
from test_jupyterlab import browser, free_port, shot  # noqa: F401 (browser is a fixture)


def test_mlflow_export_shows_the_runs_in_mlflow_s_ui(browser, tmp_path, monkeypatch, capsys):
    """`mnist-lab export mlflow` copies a sweep (a parent, its trials as children) and a plain run into MLflow, once;
    a real `mlflow server` on loopback serves them: params, metrics by epoch, test intervals, artefacts, its UI."""
    try: import mlflow  # noqa: F401
    except ImportError:
        if os.environ.get("MNIST_LAB_REQUIRE_MLFLOW"): pytest.fail("MNIST_LAB_REQUIRE_MLFLOW is set but mlflow is missing")
        pytest.skip('needs the mlflow extra: pip install -e ".[mlflow]"')
    from mnist_lab.eval import html_report
    from mnist_lab.runs import export_mlflow, runs_table
    from mnist_lab.sweep import sweep
    from mnist_lab.train import TrainConfig, fit
    tiny = dict(dataset="mnist_sample", model="linear", epochs=2, steps_per_epoch=5, tensorboard=False)
    sweep({"lr": [1e-3, 1e-2]}, tmp_path / "runs" / "lr", params=tiny)
    plain = fit(TrainConfig(**tiny, progress="none", runs_root=str(tmp_path / "runs"), name="plain")).run_dir
    html_report(plain)  # report.html and the plots it draws
    damaged = tmp_path / "runs" / "damaged" / plain.name  # a received run with a number no float holds: skipped, said
    damaged.parent.mkdir()
    subprocess.run(["cp", "-a", str(plain), str(damaged.parent)], check=True)
    (damaged / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "val_accuracy": 10**400}) + "\n")
    os.mkfifo(plain / "hostile.png")  # a received run's "plots": a FIFO, and a link out of the folder
    (plain / "link.png").symlink_to(plain / "confusion.png")
    db = f"sqlite:///{tmp_path}/mlflow.db"
    code, out, err = in_process("export", "mlflow", "--uri", db, "--root", str(tmp_path / "runs"))  # the CLI's code
    assert code == 0 and "exported 3 run(s)" in out, out + err[-2000:]
    assert f"skipped {damaged}: {damaged}/metrics.jsonl: damaged" in out, out
    assert f"not exported: {plain}/hostile.png: not a regular file" in out and "link.png" in out, out
    again = export_mlflow(runs_table(tmp_path / "runs"), db)  # the second export adds nothing
    assert len(again) == 3 and not any(new for _, new in again.values()), again
    done = (plain / "status.json").read_text()  # exported stopped, then resumed to the end: the copy follows, once
    (plain / "status.json").write_text(json.dumps({**json.loads(done), "status": "stopped", "epoch": 1}))
    assert export_mlflow([plain], db)[str(plain)][1]
    (plain / "status.json").write_text(json.dumps({**json.loads(done), "status": "stopped", "epoch": 2}))  # and again
    assert [export_mlflow([plain], db)[str(plain)][1] for _ in range(2)] == [True, False]
    (plain / "status.json").write_text(done)
    assert [export_mlflow([plain], db)[str(plain)][1] for _ in range(2)] == [True, False]
    import mlflow  # a store (shared, say) whose experiment keeps artefacts where others may write: none written there
    shared = tmp_path / "shared"; shared.mkdir(); shared.chmod(0o777)
    mlflow.MlflowClient(db).create_experiment("elsewhere", artifact_location=shared.as_uri())
    got = export_mlflow([plain], db, experiment="elsewhere")
    assert not any(new for _, new in got.values()) and not any(shared.iterdir()), got
    assert os.stat(tmp_path / "mlflow.db").st_mode & 0o777 == 0o600  # made yours alone: no one else can lock it
    os.chmod(tmp_path / "mlflow.db", 0o644); export_mlflow([plain], db)  # one made before that rule: closed when opened
    assert os.stat(tmp_path / "mlflow.db").st_mode & 0o777 == 0o600
    team = tmp_path / "team"; team.mkdir(); team.chmod(0o777)  # a store in a folder anyone may change: a trigger of
    capsys.readouterr()  # theirs (or a database put in its place) could move a run's folder
    assert not any(new for _, new in export_mlflow([plain], f"sqlite:///{team}/mlflow.db").values())
    assert "the store can be changed by others" in capsys.readouterr().out
    (tmp_path / "settings.ini").write_text("[DEFAULT]\nlib_name = mine\n"); (tmp_path / "nbs").mkdir()
    monkeypatch.chdir(tmp_path / "nbs")  # a relative path is the project's (as --root is), not the notebook folder's
    export_mlflow([plain], "sqlite:///mlflow.db")
    assert not (tmp_path / "nbs" / "mlflow.db").exists() and len(export_mlflow([plain], db)) == 1
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow's plain file store (./mlruns) makes the run's folder itself
    got = export_mlflow([plain], str(tmp_path / "mlruns"))
    assert all(new for _, new in got.values()) and list((tmp_path / "mlruns").rglob("model.safetensors")), got
    # the run is private (pytest's folders are yours alone): its copies' folder too, however the store is set
    assert [oct(a.stat().st_mode & 0o077) for a in (tmp_path / "mlruns").rglob("artifacts")] == ["0o0"]
    port = free_port()
    server = subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri", db,
                               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    api = f"http://127.0.0.1:{port}/api/2.0/mlflow"
    try:
        for _ in range(120):
            try: urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2); break
            except OSError: time.sleep(0.5)
        ask = lambda path, body: json.load(urllib.request.urlopen(urllib.request.Request(
            f"{api}/{path}", json.dumps(body).encode(), {"Content-Type": "application/json"}), timeout=30))
        exp = json.load(urllib.request.urlopen(f"{api}/experiments/get-by-name?experiment_name=mnist_lab",
                                               timeout=30))["experiment"]
        runs = ask("runs/search", {"experiment_ids": [exp["experiment_id"]], "max_results": 100})["runs"]
        names = sorted(r["info"]["run_name"] for r in runs)
        assert len(runs) == 4 and "lr" in names and plain.name in names, names
        tags = lambda r: {t["key"]: t["value"] for t in r["data"].get("tags", [])}
        parent = next(r["info"]["run_id"] for r in runs if r["info"]["run_name"] == "lr")
        assert sum(tags(r).get("mlflow.parentRunId") == parent for r in runs) == 2
        mine = next(r for r in runs if r["info"]["run_name"] == plain.name)
        metrics = {m["key"]: m["value"] for m in mine["data"]["metrics"]}
        summary = json.loads((plain / "summary.json").read_text())
        assert metrics["test_accuracy"] == summary["test_accuracy"], metrics
        assert metrics["test_accuracy_low"] == summary["intervals"]["accuracy"][0]
        params = {p["key"]: p["value"] for p in mine["data"]["params"]}
        assert params["model"] == "linear" and params["epochs"] == "2"
        history = json.load(urllib.request.urlopen(f"{api}/metrics/get-history?run_id={mine['info']['run_id']}"
                                                   "&metric_key=val_accuracy", timeout=30))["metrics"]
        assert [m["step"] for m in history] == [1, 2]
        files = json.load(urllib.request.urlopen(f"{api}/artifacts/list?run_id={mine['info']['run_id']}",
                                                 timeout=30))["files"]
        assert {"model.safetensors", "report.html", "confusion.png"} <= {f["path"] for f in files}, files
        assert not {"hostile.png", "link.png"} & {f["path"] for f in files}, files
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(f"http://127.0.0.1:{port}/#/experiments/{exp['experiment_id']}/runs")  # its training runs
        page.wait_for_selector(f"text={plain.name}", timeout=60_000)
        shot(page, "mlflow_ui")
        page.close()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)
