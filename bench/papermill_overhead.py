"""Papermill overhead: wall time of `papermill nbs/train.ipynb` minus the in-kernel training time, where the
rest goes (from the cell start and end times papermill records), and the floor that torch and papermill set:
the same papermill call on a one-cell notebook that only imports torch and matplotlib and builds an Adam
optimizer (torch.optim imports torch._dynamo the first time), freezing the imports out of the garbage
collector as mnist_lab does in a headless kernel.

    python bench/papermill_overhead.py [--epochs 2] [--repeat 5] [--tensorboard]"""
import argparse, datetime, json, statistics, subprocess, sys, tempfile, time
from pathlib import Path
import nbformat
from common import ROOT, finish

TARGET_OWN_S = 0.5  # mnist_lab's own share of the overhead, beyond papermill running torch (issue "fast on every CPU")

FLOOR_CELL = ("import atexit, gc, torch, matplotlib.pyplot\ngc.freeze(); atexit.register(gc.freeze)  # as mnist_lab.train\n"
              "torch.optim.Adam([torch.zeros(1, requires_grad=True)])")


def write_floor_notebook(path: Path) -> Path:
    "The floor's one-cell notebook (FLOOR_CELL), for papermill."
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(FLOOR_CELL)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def stamp(s: str) -> float: return datetime.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def papermill(nb: Path, out: Path, *params) -> dict:
    "Run papermill; return the wall time and, per phase, seconds measured from papermill's cell timestamps."
    t = time.time()
    subprocess.run([sys.executable, "-m", "papermill", str(nb), str(out), *params], cwd=out.parent.parent,
                   check=True, capture_output=True)
    wall = time.time() - t
    cells = [c.metadata.papermill for c in nbformat.read(out, 4).cells if c.cell_type == "code"]
    return {"wall": wall, "start": stamp(cells[0]["start_time"]) - t, "exit": t + wall - stamp(cells[-1]["end_time"]),
            "cells": [c["duration"] for c in cells]}


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=5, help="runs of each notebook; medians are reported")
    ap.add_argument("--tensorboard", action="store_true", help="keep TensorBoard logging on, as by default")
    a = ap.parse_args()
    d = Path(tempfile.mkdtemp())
    (d / "runs").mkdir()
    floor_nb = write_floor_notebook(d / "floor.ipynb")

    rows, floors = [], []
    for i in range(a.repeat):
        r = papermill(ROOT / "nbs" / "train.ipynb", d / "runs" / f"out{i}.ipynb", "-p", "dataset", "mnist_sample",
                      "-p", "epochs", str(a.epochs), "-p", "tensorboard", str(a.tensorboard), "-p", "run_dir", f"runs/r{i}")
        s = json.loads((d / "runs" / f"r{i}" / "summary.json").read_text())
        imports, *_, fit_cell, report_cell = r["cells"]
        rows.append({"wall": r["wall"], "training": s["train_seconds"], "overhead": r["wall"] - s["train_seconds"],
                     "start": r["start"], "imports": imports, "fit_extra": fit_cell - s["train_seconds"],
                     "report": report_cell, "exit": r["exit"],
                     "rest": r["wall"] - r["start"] - sum(r["cells"]) - r["exit"]})
        floors.append(papermill(floor_nb, d / "runs" / f"floor{i}.ipynb")["wall"])
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    print(f"train.ipynb, {a.epochs} epochs on mnist_sample, TensorBoard {'on' if a.tensorboard else 'off'}, "
          f"median of {a.repeat} runs:")
    print(f"  papermill wall {med['wall']:.2f}s, in-kernel training {med['training']:.2f}s")
    print(f"  overhead = wall - training = {med['overhead']:.2f}s "
          f"(min {min(r['overhead'] for r in rows):.2f}s, max {max(r['overhead'] for r in rows):.2f}s)")
    for k, what in [("start", "papermill and kernel start, until the first cell"),
                    ("imports", "first cell: import mnist_lab (torch)"),
                    ("fit_extra", "fit() besides training: data, model, optimizer (imports torch._dynamo), test"),
                    ("report", "report(): 4 plots of fit's test predictions (imports matplotlib)"),
                    ("exit", "after the last cell: kernel shutdown, final notebook write"),
                    ("rest", "other cells and between cells")]:
        print(f"    {med[k]:5.2f}s  {what}")
    print(f"floor: papermill on a one-cell notebook ({FLOOR_CELL!r}): {statistics.median(floors):.2f}s "
          f"(median of {a.repeat})")
    # each train run is paired with the floor run right after it, so a slow spell of the machine cancels out
    own = statistics.median(r["overhead"] - f for r, f in zip(rows, floors))
    print(f"mnist_lab's own share = overhead - floor = {own:.2f}s (median of the {a.repeat} paired differences)")
    finish("papermill_overhead" + ("-tensorboard" if a.tensorboard else ""),
           {"median": med, "floor": statistics.median(floors), "own_share": own, "runs": rows},
           {f"mnist_lab's own share of papermill's overhead <= {TARGET_OWN_S} s": own <= TARGET_OWN_S})
