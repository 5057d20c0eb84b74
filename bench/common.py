"Shared helpers of the benchmarks: where the real data is, and the pytorch/examples MNIST reference."
import gzip, os, tempfile
from pathlib import Path
import torch
from torch import nn
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
SHARED = next((Path(p) for p in (os.environ.get("MNIST_LAB_SHARED"), ROOT.parent / "shared", "/work/shared")
               if p and Path(p, "data").is_dir()), ROOT.parent / "shared")
MNIST10K = SHARED / "data" / "mnist10k"
FASHION = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist


def torchvision_mnist_root(src=MNIST10K) -> Path:
    "A folder in torchvision's MNIST/raw layout (uncompressed, as torchvision.datasets.MNIST reads it)."
    root = Path(tempfile.mkdtemp())
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in src.glob("*.gz"): (raw / f.stem).write_bytes(gzip.decompress(f.read_bytes()))
    return root


class ExamplesNet(nn.Module):
    "The CNN of pytorch/examples mnist/main.py, unchanged."
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = F.max_pool2d(x, 2)
        x = torch.flatten(self.dropout1(x), 1)
        x = self.dropout2(F.relu(self.fc1(x)))
        return F.log_softmax(self.fc2(x), dim=1)



def settle_malloc():
    """Set glibc's malloc thresholds where they stand in `fit` once its data is loaded: glibc raises them as it sees
    large blocks freed (up to 32 MiB, and twice that for what it keeps free). A loop of steps in a fresh process
    would otherwise hand its activations back to the kernel and fault them in again every step (about 2,000 page
    faults a step, see bench/malloc.py), which `fit` does not pay. Nothing elsewhere than glibc."""
    import ctypes, platform
    if platform.libc_ver()[0] != "glibc": return
    libc = ctypes.CDLL(None)
    libc.mallopt(-3, 32 << 20); libc.mallopt(-1, 64 << 20)  # M_MMAP_THRESHOLD, M_TRIM_THRESHOLD (malloc.h)


def train_step(model, opt, x, y, bf16: bool):
    "One training step as `fit` takes it: the forward pass under bf16 autocast (when `bf16`), cross-entropy, the step."
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = F.cross_entropy(model(x).float(), y)
    opt.zero_grad(); loss.backward(); opt.step()

def examples_loaders(root: Path, batch_size=64, test_batch_size=1000):
    "pytorch/examples' data pipeline: torchvision MNIST + ToTensor + Normalize + DataLoader."
    from torchvision import datasets, transforms
    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    train = datasets.MNIST(str(root), train=True, download=False, transform=tf)
    test = datasets.MNIST(str(root), train=False, download=False, transform=tf)
    return (torch.utils.data.DataLoader(train, batch_size=batch_size, shuffle=True),
            torch.utils.data.DataLoader(test, batch_size=test_batch_size))


def machine() -> dict:
    "The hardware and software a figure was measured on: CPU model and the flags that decide its speed."
    import platform, subprocess
    from mnist_lab.train import cpu_flags  # the flags amp=auto decides from
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    model = next((l.split(":", 1)[1].strip() for l in info.splitlines() if l.startswith("model name")), "")
    flags = cpu_flags()
    sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    return {"cpu": model or platform.processor(), "cores": os.cpu_count(),
            "flags": sorted(flags & {"avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16"}),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "torch": torch.__version__, "threads": torch.get_num_threads(), "python": platform.python_version(),
            "git": sha}


def mean_std(xs) -> tuple:
    "Mean and sample standard deviation (0 for one value)."
    import statistics
    xs = list(xs)
    return statistics.mean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0


def finish(name: str, result: dict, targets: dict):
    """Save `result` with the command, the machine and each target's outcome in bench/results/<name>-<cpu>.json,
    then exit non-zero when a target was missed. `targets`: {what was promised: whether it was met}."""
    import json, re, sys, time
    m = machine()
    cpu = re.sub(r"[^a-z0-9]+", "-", re.sub(r"\(r\)|\(tm\)|cpu|processor|\d+-core", "", m["cpu"].lower())).strip("-")
    # one model name covers CPUs of different speed (an EPYC with or without AVX-512-BF16): name the feature too
    cpu += "-" + next((n for f, n in (("amx_bf16", "amx"), ("avx512_bf16", "avx512bf16"), ("avx512f", "avx512"))
                       if f in m["flags"]), "avx2")
    out = ROOT / "bench" / "results" / f"{name}-{cpu}.json"
    out.parent.mkdir(exist_ok=True)
    record = {"command": "python bench/" + " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
              "date": time.strftime("%Y-%m-%d %H:%M"), "machine": m, "result": result,
              "targets": {k: bool(v) for k, v in targets.items()}}
    out.write_text(json.dumps(record, indent=1) + "\n")
    for what, met in targets.items(): print(f"target {'met' if met else 'MISSED'}: {what}")
    print(f"saved {out.relative_to(ROOT)}")
    if not all(targets.values()): sys.exit(1)
