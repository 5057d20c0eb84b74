"Shared helpers of the benchmarks: where the real data is, and the pytorch/examples MNIST reference."
import gzip, os, shutil, tempfile
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


def examples_loaders(root: Path, batch_size=64, test_batch_size=1000):
    "pytorch/examples' data pipeline: torchvision MNIST + ToTensor + Normalize + DataLoader."
    from torchvision import datasets, transforms
    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    train = datasets.MNIST(str(root), train=True, download=False, transform=tf)
    test = datasets.MNIST(str(root), train=False, download=False, transform=tf)
    return (torch.utils.data.DataLoader(train, batch_size=batch_size, shuffle=True),
            torch.utils.data.DataLoader(test, batch_size=test_batch_size))
