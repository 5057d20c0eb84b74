"""A cnn whose first stage is a stride-2 convolution instead of a convolution and a 2x2 max pool, tried against the
default cnn: the profile of a step (bench/profile_step.py) puts about 40% of it in that first stage, its
convolution and max pooling on all 28x28 pixels. The trial stem is a 4x4 convolution with stride 2 and padding 1
(it sees every pixel; 3x3 and 6x6 kernels were tried too), then batch norm and ReLU; stages 2 and 3 and the head
are the default cnn's. Both train with the default recipe, alternating per seed:
- MNIST: 2 epochs on the 10k real digits (time_to_98's recipe), test accuracy on the official test set;
- Fashion-MNIST: 4 epochs on the full set, the same recipe otherwise.

    python bench/stride_stem.py [--seeds 0 1 2]

A trial, not a default: it is kept only if it is faster to the same accuracy on both datasets (3 seeds)."""
import argparse, statistics, tempfile, warnings
from torch import nn
import mnist_lab.train as T
from mnist_lab.model import register_model, conv_bn
from common import FASHION, MNIST10K, finish, mean_std


@register_model("cnn_stride_stem")
def cnn_stride_stem(width: int = 16, n_classes: int = 10, in_channels: int = 1):
    "The default cnn with a stride-2 4x4 convolution (batch norm, ReLU) as its first stage, no max pool there."
    head = nn.Linear(4 * width, n_classes)
    nn.init.zeros_(head.weight)
    stem = nn.Sequential(nn.Conv2d(in_channels, width, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
    return nn.Sequential(stem, conv_bn(width, 2 * width, pool=True), conv_bn(2 * width, 4 * width),  # (B, 4w, 7, 7)
                         nn.AdaptiveMaxPool2d(1), nn.Flatten(), head)


DATASETS = {"mnist (10k digits, 2 epochs)": dict(dataset="mnist", data_dir=str(MNIST10K), epochs=2),
            "fashion_mnist (4 epochs)": dict(dataset="fashion_mnist", data_dir=str(FASHION), epochs=4)}
MODELS = ("cnn", "cnn_stride_stem")

if __name__ == "__main__":
    warnings.filterwarnings("ignore")
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    a = ap.parse_args()
    result, targets = {}, {}
    for name, data in DATASETS.items():
        runs = {m: [] for m in MODELS}
        for seed in a.seeds:
            for m in MODELS:
                s = T.fit(T.TrainConfig(**data, model=m, seed=seed, download=False, tensorboard=False, progress="none",
                                        runs_root=tempfile.mkdtemp())).summary
                runs[m].append({"seed": seed, "test_accuracy": s["test_accuracy"], "train_seconds": s["train_seconds"]})
                print(f"{name}, {m}, seed {seed}: {s['test_accuracy']:.4f} in {s['train_seconds']:.2f} s", flush=True)
        result[name] = {m: {"runs": rows, "test_accuracy": mean_std(r["test_accuracy"] for r in rows),
                            "train_seconds": statistics.median(r["train_seconds"] for r in rows)} for m, rows in runs.items()}
        plain, trial = (result[name][m] for m in MODELS)
        print(f"{name}: cnn {plain['test_accuracy'][0]:.4f} in {plain['train_seconds']:.2f} s, stride stem "
              f"{trial['test_accuracy'][0]:.4f} in {trial['train_seconds']:.2f} s "
              f"({plain['train_seconds'] / trial['train_seconds']:.2f}x faster)")
        targets[f"{name}: the stride stem is as accurate (mean of the seeds)"] = (
            trial["test_accuracy"][0] >= plain["test_accuracy"][0])
    finish("stride_stem", result, targets)
