import os, signal, subprocess, sys, time
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
# the project's machines keep real data in a `shared` folder beside the clone (or at /work/shared when CI
# clones elsewhere); MNIST_LAB_SHARED points anywhere else
SHARED = next((p for p in (os.environ.get("MNIST_LAB_SHARED"), ROOT.parent / "shared", "/work/shared")
               if p and Path(p, "data").is_dir()), ROOT.parent / "shared")
SHARED_MNIST = Path(SHARED) / "data" / "mnist10k"

# The tests marked xdist_group("many_processes") start several processes at once and time them (Ctrl-C of a sweep,
# torchrun ranks killed, JupyterLab with a browser, 8 simultaneous runs). Under `pytest -n 2 --dist loadgroup` they
# take turns on one worker: at most one of them shares the 2 cores with another test, so their timeouts keep their
# margin. (pytest 9.2 silently ignores the groups, pytest-dev/pytest-xdist#1386: settings.ini pins pytest<9.2.)
# And one torch thread per process (a test that needs more sets `threads`): with two workers the cores are taken,
# and OpenMP threads waiting for a busy core spin on it. The detach test alone used 21 s of CPU with 2 threads,
# 51 s beside another test; the papermill kernels and CLI runs the tests start inherit this.
os.environ.setdefault("OMP_NUM_THREADS", "1")


def papermill(out, *params, cwd, timeout=600, nb=ROOT / "nbs" / "train.ipynb", env=None):
    "Run a notebook (nbs/train.ipynb unless told) through papermill's CLI (a real kernel); returns the CompletedProcess."
    args = [sys.executable, "-m", "papermill", str(nb), str(out)]
    for k, v in params: args += ["-p", k, str(v)]
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def pace_plugin(folder: Path, seconds: float) -> Path:
    """A plugin file registering the augmentation `pace`, which sleeps `seconds` a batch (or $PACE_S): it paces a run
    in wall time without spending CPU, so a test can stop it mid-run on any machine; `PACE_S=0` lets it run at full
    speed (a resume, say). It draws nothing from `gen`: a paced run trains exactly as an unpaced one."""
    path = Path(folder) / "pace.py"
    path.write_text("import os, time\nfrom mnist_lab.data import register_augmentation\n"
                    "@register_augmentation('pace')\ndef pace(x, gen):\n"
                    f"    time.sleep(float(os.environ.get('PACE_S', {seconds})))\n    return x\n")
    return path


@pytest.fixture
def shared_mnist():
    "The 10k real MNIST digits beside the repo; CI sets MNIST_LAB_REQUIRE_SHARED_DATA so this never skips there."
    if not SHARED_MNIST.is_dir():
        if os.environ.get("MNIST_LAB_REQUIRE_SHARED_DATA"):
            pytest.fail(f"{SHARED_MNIST} is missing but MNIST_LAB_REQUIRE_SHARED_DATA is set")
        pytest.skip(f"real-data check needs {SHARED_MNIST} (present on the project's machines)")
    return SHARED_MNIST


@pytest.fixture(autouse=True)
def own_download_memory(tmp_path, monkeypatch):
    "Each test remembers failed downloads in its own cache folder, never in the user's (nor another test's)."
    import mnist_lab.data
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))  # for the papermill kernels it starts
    monkeypatch.setattr(mnist_lab.data, "DOWNLOAD_FAILED", tmp_path / "xdg-cache" / "mnist_lab" / "download-failed")


def in_process(*args) -> tuple:
    "`mnist-lab ARGS` run by its code in this process (no new process, no second import of torch): (code, out, err)."
    import contextlib, io, signal, mnist_lab.cli
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}  # main() sets its own
    try:
        with contextlib.redirect_stdout(out := io.StringIO()), contextlib.redirect_stderr(err := io.StringIO()):
            code = mnist_lab.cli.main(list(args))
    finally:
        for s, h in handlers.items(): signal.signal(s, h)
    return code, out.getvalue(), err.getvalue()


def in_child(fn, errors: Path) -> int:
    """Fork a child of this process (what it has imported, torch say, the child need not import again: no 2 s
    start) that runs `fn()` and exits 0, or writes its traceback to `errors` and exits 1; returns its pid."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            import torch
            torch.set_num_threads(1)  # no OpenMP pool inherited across fork
            fn()
            code = 0
        except BaseException:
            import traceback
            errors.write_text(traceback.format_exc())
        finally: os._exit(code)
    return pid


def exit_codes(pids: list, timeout: float = 120) -> list:
    "Wait for forked children; those still running after `timeout` s are killed (exit code -9)."
    codes, deadline = {}, time.time() + timeout
    while len(codes) < len(pids):
        for pid in set(pids) - set(codes):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done: codes[pid] = os.waitstatus_to_exitcode(status)
            elif time.time() > deadline: os.kill(pid, signal.SIGKILL)  # reaped on the next round
        time.sleep(0.02)
    return [codes[pid] for pid in pids]


def pytest_configure(config):
    config.addinivalue_line("markers", "disk_size(size): the size of the tiny_disk tmpfs (test_reliability.py)")
    # torchvision 0.29 deprecates its image decoders for TorchCodec's, which give the same pixels for PNG and JPEG
    # here; TorchCodec's PyPI wheels link CUDA libraries, so a CPU-only torch is not known to load them. Until that
    # is settled, decoding stays with torchvision, whose warning (once per image: about 8,000 a run) is not repeated
    config.addinivalue_line("filterwarnings", "ignore:The image decoding and encoding capabilities of TorchVision"
                                              ":DeprecationWarning")
