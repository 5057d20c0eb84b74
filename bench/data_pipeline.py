"""Data pipeline throughput: training batches per second as the model sees them (normalized float tensors,
shuffled, batch 128), mnist_lab's in-memory uint8 slicing vs the template pipeline (torchvision MNIST +
ToTensor + Normalize + DataLoader, as in pytorch-template and pytorch/examples), same 10k real digits.

    python bench/data_pipeline.py"""
import time, warnings
import torch
from common import MNIST10K, torchvision_mnist_root, finish

BS, SECONDS = 128, 3.0


def rate(batches) -> float:
    "Images per second over about SECONDS of pulling batches from an endless iterator (after a warm-up batch)."
    next(batches)  # loading the data is not part of the rate
    n, t = 0, time.perf_counter()
    while time.perf_counter() - t < SECONDS:
        x, y = next(batches)
        n += len(x)
    return n / (time.perf_counter() - t)


def stats(d) -> tuple:
    "The dataset's normalization: `Data.mean`/`std` (per channel), or `Data.spec`'s in checkouts before own datasets."
    return (d.mean, d.std) if hasattr(d, "mean") else (d.spec.mean, d.spec.std)


def mnist_lab_batches():
    from mnist_lab.data import load_data, BatchSampler, normalize
    d = load_data("mnist", MNIST10K, download_ok=False)
    sampler = BatchSampler(len(d.x_train), BS, torch.Generator().manual_seed(0))
    while True:
        idx = next(sampler)
        yield normalize(d.x_train[idx], *stats(d)), d.y_train[idx]


def mnist_lab_augmented():
    from mnist_lab.data import load_data, BatchSampler, normalize, augment_batch, parse_augment
    d = load_data("mnist", MNIST10K, download_ok=False)
    g = torch.Generator().manual_seed(0)
    sampler, augs = BatchSampler(len(d.x_train), BS, g), parse_augment("shift,rotate")
    while True:
        idx = next(sampler)
        yield augment_batch(normalize(d.x_train[idx], *stats(d)), augs, g), d.y_train[idx]


def template_batches(num_workers=0):
    from torchvision import datasets, transforms
    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    ds = datasets.MNIST(str(torchvision_mnist_root()), train=True, download=False, transform=tf)
    loader = torch.utils.data.DataLoader(ds, batch_size=BS, shuffle=True, num_workers=num_workers,
                                         persistent_workers=num_workers > 0)
    while True: yield from loader


def template_augmented():
    from torchvision import datasets, transforms
    tf = transforms.Compose([transforms.RandomAffine(10, translate=(0.1, 0.1)), transforms.ToTensor(),
                             transforms.Normalize((0.1307,), (0.3081,))])
    ds = datasets.MNIST(str(torchvision_mnist_root()), train=True, download=False, transform=tf)
    while True: yield from torch.utils.data.DataLoader(ds, batch_size=BS, shuffle=True)


if __name__ == "__main__":
    warnings.filterwarnings("ignore")
    ours, tmpl = rate(mnist_lab_batches()), rate(template_batches())
    tmpl2 = rate(template_batches(num_workers=2))
    print(f"mnist_lab batches:                       {ours:12,.0f} images/s")
    print(f"template DataLoader (num_workers=0):     {tmpl:12,.0f} images/s   -> mnist_lab is {ours / tmpl:.0f}x faster")
    print(f"template DataLoader (num_workers=2):     {tmpl2:12,.0f} images/s   -> mnist_lab is {ours / tmpl2:.0f}x faster")
    aug, taug = rate(mnist_lab_augmented()), rate(template_augmented())
    print(f"with shift+rotate: mnist_lab batched {aug:,.0f} images/s vs per-sample RandomAffine {taug:,.0f} "
          f"images/s -> {aug / taug:.0f}x")
    finish("data_pipeline", {"images_per_s": {"mnist_lab": ours, "dataloader": tmpl, "dataloader_2_workers": tmpl2,
                                              "mnist_lab_augmented": aug, "per_sample_random_affine": taug}},
           {"batches 10x the DataLoader's rate": ours >= 10 * tmpl,
            "augmented batches 5x per-sample RandomAffine": aug >= 5 * taug})
