"""Papermill overhead: wall time of `papermill nbs/train.ipynb` minus the in-kernel training time, and where
the rest goes (per-cell durations that papermill records in the output notebook).

    python bench/papermill_overhead.py [--epochs 2]"""
import argparse, json, subprocess, sys, tempfile, time
from pathlib import Path
import nbformat
from common import ROOT

if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=2)
    a = ap.parse_args()
    d = Path(tempfile.mkdtemp())
    (d / "runs").mkdir()
    t = time.time()
    subprocess.run([sys.executable, "-m", "papermill", str(ROOT / "nbs" / "train.ipynb"), "runs/out.ipynb",
                    "-p", "dataset", "mnist_sample", "-p", "epochs", str(a.epochs), "-p", "tensorboard", "False"],
                   cwd=d, check=True, capture_output=True)
    wall = time.time() - t
    (summary,) = (d / "runs").rglob("summary.json")
    s = json.loads(summary.read_text())
    print(f"papermill wall {wall:.2f}s; in-kernel training {s['train_seconds']:.2f}s; fit() {s['seconds']:.2f}s")
    print(f"overhead = wall - training = {wall - s['train_seconds']:.2f}s; wall - fit() = {wall - s['seconds']:.2f}s")
    nb = nbformat.read(d / "runs" / "out.ipynb", 4)
    cells = sum(c.metadata.get("papermill", {}).get("duration") or 0 for c in nb.cells)
    print(f"  process and kernel start-up, notebook I/O: {wall - cells:.2f}s")
    for c in nb.cells:
        dur = c.metadata.get("papermill", {}).get("duration") or 0
        if dur > 0.05: print(f"  cell {c.source.splitlines()[-1][:40]!r}: {dur:.2f}s")
