"""Full Fashion-MNIST written as 70,000 PNG files in class folders, loaded by `dataset=image_folder` against
torchvision's ImageFolder + DataLoader(num_workers=2) over the same files.

Targets: the cached load <= 1 s; mnist_lab's training batches (slices of the cached uint8 tensor, normalized)
>= 50x the DataLoader's images/s; the first load (decode + cache) no slower than one DataLoader epoch. With
--recipe, the 93% Fashion-MNIST recipe (bench/fashion_93.py) also runs once from the folder: the same accuracy.

    apt-get install dataset-fashion-mnist   # once
    python bench/image_folder.py [--recipe] [--folder DIR]   # DIR keeps the PNGs between runs"""
import argparse, shutil, tempfile, time, warnings
from pathlib import Path
import torch
from common import FASHION, finish

TARGET_CACHED_S, TARGET_BATCH_RATIO = 1.0, 50


def write_pngs(root: Path):
    "Fashion-MNIST's IDX files as root/{train,test}/<class>/<i>.png (grey, 28x28), as a user's own folder."
    from torchvision.io import write_png
    from mnist_lab.data import load_data
    d = load_data("fashion_mnist", str(FASHION), download_ok=False)
    for part, x, y in (("train", d.x_train, d.y_train), ("test", d.x_test, d.y_test)):
        for c, name in enumerate(d.classes):
            (root / part / name.replace("/", "-")).mkdir(parents=True, exist_ok=True)
        names = [n.replace("/", "-") for n in d.classes]
        for i, (img, label) in enumerate(zip(x, y.tolist())):
            write_png(img, str(root / part / names[label] / f"{i:05d}.png"), compression_level=1)


def dataloader_epoch(root: Path, batch_size: int = 256) -> tuple:
    "(seconds, images/s) of one epoch of ImageFolder + ToTensor + Normalize + DataLoader(num_workers=2)."
    from torchvision import datasets, transforms
    tf = transforms.Compose([transforms.Grayscale(), transforms.ToTensor(), transforms.Normalize((0.286,), (0.353,))])
    loader = torch.utils.data.DataLoader(datasets.ImageFolder(str(root / "train"), tf), batch_size=batch_size,
                                         shuffle=True, num_workers=2)
    t, n = time.time(), 0
    for xb, yb in loader: n += len(yb)
    return time.time() - t, n / (time.time() - t)


def lab_batches(d, batch_size: int = 256, steps: int = 2000) -> float:
    "images/s of mnist_lab's training batches: a permutation slice of the cached uint8 tensor, normalized."
    from mnist_lab.data import BatchSampler, normalize
    s, t = BatchSampler(len(d.x_train), batch_size, torch.Generator().manual_seed(0)), time.time()
    for _ in range(steps): xb, yb = normalize(d.x_train[next(s)], d.mean, d.std), d.y_train
    return steps * batch_size / (time.time() - t)


if __name__ == "__main__":
    warnings.filterwarnings("ignore")
    ap = argparse.ArgumentParser()
    ap.add_argument("--folder", help="where the PNG folder is (written there if missing); default: a temp folder")
    ap.add_argument("--recipe", action="store_true", help="also train bench/fashion_93.py's recipe from the folder")
    a = ap.parse_args()
    from mnist_lab.data import load_data
    root = Path(a.folder or tempfile.mkdtemp())
    if not (root / "test").is_dir():
        t = time.time(); write_pngs(root); print(f"wrote 70,000 PNGs in {time.time() - t:.1f}s", flush=True)
    shutil.rmtree(root / ".mnist_lab_cache", ignore_errors=True)
    t = time.time(); d = load_data("image_folder", root, channels=1); first = time.time() - t
    t = time.time(); d2 = load_data("image_folder", root, channels=1); cached = time.time() - t
    assert torch.equal(d.x_train, d2.x_train) and d.shape == (1, 28, 28) and len(d.x_train) == 60000
    print(f"first load (decode + cache) {first:.2f}s, cached load {cached:.3f}s", flush=True)
    dl_s, dl_rate = dataloader_epoch(root)
    rate = lab_batches(d)
    print(f"DataLoader epoch {dl_s:.1f}s ({dl_rate:,.0f} images/s); mnist_lab batches {rate:,.0f} images/s "
          f"({rate / dl_rate:.0f}x)", flush=True)
    result = {"n_files": 70000, "first_load_s": first, "cached_load_s": cached, "dataloader_epoch_s": dl_s,
              "dataloader_images_per_s": dl_rate, "lab_batch_images_per_s": rate, "batch_ratio": rate / dl_rate}
    targets = {f"cached load <= {TARGET_CACHED_S} s": cached <= TARGET_CACHED_S,
               f"training batches >= {TARGET_BATCH_RATIO}x the DataLoader's images/s": rate / dl_rate >= TARGET_BATCH_RATIO,
               "first load no slower than one DataLoader epoch": first <= dl_s}
    if a.recipe:
        import mnist_lab.train as T
        from fashion_93 import RECIPE
        t = time.time()
        r = T.fit(T.TrainConfig.from_params(**RECIPE, dataset="image_folder", data_dir=str(root), channels=1,
                                            download=False, tensorboard=False, progress="none",
                                            runs_root=tempfile.mkdtemp()))
        result["recipe"] = {"test_accuracy": r.summary["test_accuracy"], "wall": time.time() - t}
        print(f"93% recipe from the folder: test accuracy {r.summary['test_accuracy']:.4f} in {time.time() - t:.1f}s")
        targets["the 93% recipe reaches 93.0% from the folder"] = r.summary["test_accuracy"] >= 0.93
    finish("image_folder", result, targets)
