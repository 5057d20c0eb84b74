import os, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_MNIST = ROOT.parent / "shared" / "data" / "mnist10k"


def papermill(out, *params, cwd, timeout=600):
    "Run nbs/train.ipynb through papermill's CLI (a real kernel); returns the CompletedProcess."
    args = [sys.executable, "-m", "papermill", str(ROOT / "nbs" / "train.ipynb"), str(out)]
    for k, v in params: args += ["-p", k, str(v)]
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def shared_mnist():
    "The 10k real MNIST digits beside the repo; CI sets MNIST_LAB_REQUIRE_SHARED_DATA so this never skips there."
    if not SHARED_MNIST.is_dir():
        if os.environ.get("MNIST_LAB_REQUIRE_SHARED_DATA"):
            pytest.fail(f"{SHARED_MNIST} is missing but MNIST_LAB_REQUIRE_SHARED_DATA is set")
        pytest.skip(f"real-data check needs {SHARED_MNIST} (present on the project's machines)")
    return SHARED_MNIST
