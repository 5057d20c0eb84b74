"""Your own data and metric, by name: a folder of real PNG images (20 classes, colour, 32x32, imbalanced) and a
plugin dataset, trained through papermill and the CLI, evaluated, resumed exactly; hostile image files."""
import json, os, resource, subprocess, sys
from pathlib import Path
import pytest
import torch
from conftest import ROOT, SHARED_MNIST, papermill, in_child, exit_codes
from mnist_lab.data import read_idx, fit_images, load_data
from mnist_lab.process import one_line

FASHION = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist


def real_images():
    "20 classes of real images: the 10 MNIST digits and the 10 Fashion-MNIST classes, 60 test images of each."
    for folder in (SHARED_MNIST, FASHION):
        if not folder.is_dir():
            if os.environ.get("MNIST_LAB_REQUIRE_SHARED_DATA"): pytest.fail(f"{folder} is missing")
            pytest.skip(f"needs {folder} (apt-get install dataset-fashion-mnist; shared/data)")
    def part(folder, stem):
        name = next(p for p in folder.iterdir() if p.name.startswith(stem))
        return read_idx(name)
    xm, ym = part(SHARED_MNIST, "t10k-images"), part(SHARED_MNIST, "t10k-labels").long()
    xf, yf = part(FASHION, "t10k-images"), part(FASHION, "t10k-labels").long()
    classes = [f"digit {d}" for d in range(10)] + [f"fashion {c}" for c in range(10)]
    return torch.cat([xm[:2000], xf[:2000]]), torch.cat([ym[:2000], yf[:2000] + 10]), classes


def write_image_folder(root: Path, seed: int = 0):
    """Real digits and clothes as RGB 32x32 PNGs in 20 class folders, imbalanced (class c keeps 12 + 4c training
    images), each tinted by a random colour so that all three channels matter; 8 test images per class."""
    from torchvision.io import write_png
    x, y, classes = real_images()
    g = torch.Generator().manual_seed(seed)
    x = fit_images(x[:, None], channels=3, size=32)
    tint = (torch.rand(len(x), 3, 1, 1, generator=g) * 0.6 + 0.4)
    x = (x.float() * tint).round().to(torch.uint8)
    for c, name in enumerate(classes):
        idx = (y == c).nonzero().flatten()
        for part, chosen in (("train", idx[:12 + 4 * c]), ("test", idx[-8:])):
            (root / part / name).mkdir(parents=True, exist_ok=True)
            for i in chosen.tolist(): write_png(x[i], str(root / part / name / f"{i}.png"))
    return classes


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    return root, write_image_folder(root)


def test_image_folder_through_papermill_f1_monitor_and_eval(folder, tmp_path):
    "The path of t5: an image folder trained by name through papermill with F1 as the monitor; eval agrees."
    root, classes = folder
    out = tmp_path / "out.ipynb"
    r = papermill(out, ("dataset", "image_folder"), ("data_dir", root), ("model", "lenet"), ("epochs", 2),
                  ("batch_size", 32), ("metrics", "top_k,f1_macro,balanced_accuracy"), ("monitor", "max val_f1_macro"),
                  ("class_weights", "balanced"), ("top_k", 5), ("runs_root", tmp_path / "runs"), cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    text = json.dumps([c.get("outputs", []) for c in json.loads(out.read_text())["cells"]])
    assert "3x32x32 images, 20 classes" in text and "digit 0 12, digit 1 16" in text and "f1_macro" in text
    (run,) = (tmp_path / "runs" / "run").iterdir()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["classes"] == classes and summary["data_shape"] == [3, 32, 32]
    assert {"test_f1_macro", "test_balanced_accuracy", "test_top_k", "val_f1_macro"} <= set(summary)
    assert summary["train_counts"] == [12 + 4 * c for c in range(20)]  # the whole train/ folder, before the val split
    assert json.loads((run / "data.json").read_text())["shape"] == [3, 32, 32]
    # mnist-lab eval prints the numbers summary.json has (same autocast, same metrics), and a per-class table
    e = subprocess.run([sys.executable, "-m", "mnist_lab.cli", "eval", str(run)], capture_output=True, text=True,
                       cwd=ROOT)
    assert e.returncode == 0, e.stderr[-2000:]
    printed = json.loads(e.stdout[:e.stdout.index("}") + 1])
    for k in ("accuracy", "top_k", "f1_macro", "balanced_accuracy"): assert printed[k] == summary[f"test_{k}"], k
    assert "fashion 9" in e.stdout and "precision" in e.stdout and (run / "per_class.txt").is_file()


def test_eval_refuses_a_folder_that_changed_since_the_run_was_tested(folder, tmp_path):
    """A folder without test/ (20% of train/ held out): images added, or one edited, change the test set or the
    pixels; eval says so instead of giving other numbers as the run's (and replacing its plots)."""
    import shutil
    from mnist_lab.train import TrainConfig, fit
    from mnist_lab.eval import evaluate_run
    root = tmp_path / "images"
    shutil.copytree(folder[0] / "train", root / "train")
    run = fit(TrainConfig(dataset="image_folder", data_dir=str(root), model="linear", epochs=1, tensorboard=False,
                          progress="none", runs_root=str(tmp_path / "runs"))).run_dir
    assert evaluate_run(run)["accuracy"] == json.loads((run / "summary.json").read_text())["test_accuracy"]
    grey = fit(TrainConfig(dataset="image_folder", data_dir=str(root), channels=1, model="linear", epochs=1,
                           tensorboard=False, progress="none", runs_root=str(tmp_path / "runs"))).run_dir
    config = json.loads((grey / "config.json").read_text())  # as a run whose channels=0 read the folder grey
    (grey / "config.json").write_text(json.dumps({**config, "channels": 0}))  # (the first image grey, once)
    assert evaluate_run(grey)["accuracy"] == json.loads((grey / "summary.json").read_text())["test_accuracy"]
    one = sorted((root / "train" / "digit 3").iterdir())[0]
    shutil.copy(one, one.with_name("copy.png"))  # a grown folder: more images, another 20% held out
    with pytest.raises(ValueError, match="its data has changed since it was tested .training images per class"):
        evaluate_run(run)
    one.with_name("copy.png").unlink()
    from torchvision.io import read_image, write_png
    write_png(255 - read_image(str(one)), str(one))  # the same files and counts, one image edited
    with pytest.raises(ValueError, match="its data has changed since it was tested .an image or label edited"):
        evaluate_run(run)


def test_weights_trained_on_mnist_fine_tune_to_a_folder_of_other_classes(folder, tmp_path, capsys):
    """From MNIST to your own data: `init_from` weights trained on the 10 digits start a run on the folder's 20 classes
    (read grey at 28x28, as they were trained): every layer but the last starts from them, the last (a row per class)
    starts anew, and the run says so; another size, which the cnn takes, is said. Weights for other images (3 channels)
    are refused, naming both."""
    from mnist_lab.train import TrainConfig, fit
    tiny = dict(model="cnn", epochs=1, steps_per_epoch=2, batch_size=32, scheduler="none", tensorboard=False,
                runs_root=str(tmp_path / "runs"))
    mnist = fit(TrainConfig(dataset="mnist_sample", progress="none", **tiny))
    yours = dict(dataset="image_folder", data_dir=str(folder[0]), init_from=str(mnist.run_dir), **tiny)
    capsys.readouterr()
    tuned = fit(TrainConfig(channels=1, image_size=28, lr=1e-9, optimizer="sgd", momentum=0.0, **yours))
    before, after = dict(mnist.model.named_parameters()), dict(tuned.model.named_parameters())
    anew = [k for k in before if before[k].shape != after[k].shape]
    assert [after[k].shape[0] for k in anew] == [20, 20] and anew[0].endswith("weight") and anew[1].endswith("bias")
    assert all(torch.allclose(before[k], after[k], atol=1e-6) for k in before if k not in anew)  # lr ~ 0: as loaded
    assert f"trained for 10 classes, this data has 20: {', '.join(anew)} start anew" in capsys.readouterr().out
    fit(TrainConfig(channels=1, lr=1e-9, optimizer="sgd", momentum=0.0, **yours))  # 32x32, which the cnn takes: said
    assert "init_from: its weights were trained on 1x28x28 images, this data's are 1x32x32" in capsys.readouterr().out
    with pytest.raises(ValueError, match=r"trained on mnist_sample: \[1, 28, 28\] images, 10 classes; this run's data: "
                                         r"\[3, 32, 32\], 20 classes\).*do not fit"):
        fit(TrainConfig(progress="none", **yours))


def test_plugin_dataset_resumes_bitwise_with_balanced_sampler(folder, tmp_path):
    """A dataset registered in a plugin file (RGB 32x32, 20 classes), trained with the balanced sampler, stopped after
    its first epoch and resumed: the weights equal an uninterrupted run's. Resumed on images that changed since, it is
    refused (a grown class) before anything is written."""
    import shutil
    from mnist_lab.train import fit, TrainConfig
    root = tmp_path / "images"
    shutil.copytree(folder[0], root)
    plugin = tmp_path / "my_data.py"
    plugin.write_text("from mnist_lab.data import register_dataset, load_data\n"
                      "@register_dataset('my_images')\n"
                      f"def my_images(data_dir):\n    return load_data('image_folder', {str(root)!r})\n")
    common = dict(plugins=str(plugin), dataset="my_images", model="cnn", width=8, epochs=2, batch_size=32,
                  sampler="balanced", augment="shift,flip", tensorboard=False,
                  runs_root=str(tmp_path / "runs"), progress="none", threads=1)
    full = fit(TrainConfig(**common, name="full"))

    def stop_after_first(row):
        if row["epoch"] == 1: raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt): fit(TrainConfig(**common, name="cut"), on_epoch=stop_after_first)
    (cut,) = (tmp_path / "runs" / "cut").iterdir()
    resumed = fit(TrainConfig(**{**common, "name": "run"}, resume=str(cut)))
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values()): assert torch.equal(a, b)
    assert resumed.summary["dataset"] == "my_images" and resumed.summary["data_shape"] == [3, 32, 32]
    # a run cannot be resumed on other data (a class grown by one image; a new class): a clear error, nothing written
    before = {p.name: p.read_bytes() for p in cut.iterdir() if p.is_file()}
    one = next((root / "train" / "digit 0").iterdir()); shutil.copy(one, one.with_name("grown.png"))
    with pytest.raises(ValueError, match="resume: the run's images have changed since it began"):
        fit(TrainConfig(**{**common, "name": "run"}, resume=str(cut)))
    one.with_name("grown.png").unlink()
    shutil.copytree(root / "train" / "digit 0", root / "train" / "zz new class")
    with pytest.raises(ValueError, match=r"resume: the run was trained on my_images \(\[3, 32, 32\] images, 20 classes\)"):
        fit(TrainConfig(**{**common, "name": "run"}, resume=str(cut)))
    assert {p.name: p.read_bytes() for p in cut.iterdir() if p.is_file()} == before
    # predict on a PNG file, through the data info load_run returns
    from mnist_lab.eval import load_run, predict
    model, cfg, info = load_run(full.run_dir, plugins=str(plugin))
    png = next((root / "test" / "fashion 3").iterdir())
    assert predict(model, png, info).shape == (1, 20)


def test_cifar10_binary_files_train_by_name(tmp_path):
    "CIFAR-10 from files in its real binary format (real digits as colour 32x32 planes), trained by name."
    from mnist_lab.data import CIFAR10_FILES, CIFAR10_RECORD
    from mnist_lab.train import fit, TrainConfig
    x = fit_images(load_data("mnist_sample").x_train[:600], channels=3, size=32)
    y = load_data("mnist_sample").y_train[:600]
    folder = tmp_path / "cifar-10-batches-bin"; folder.mkdir()
    for i, f in enumerate(CIFAR10_FILES):
        xs, ys = x[i * 100:(i + 1) * 100], y[i * 100:(i + 1) * 100]
        (folder / f).write_bytes(torch.cat([ys.to(torch.uint8)[:, None], xs.reshape(100, -1)], 1).numpy().tobytes())
    assert (folder / "test_batch.bin").stat().st_size == 100 * CIFAR10_RECORD
    res = fit(TrainConfig(dataset="cifar10", data_dir=str(tmp_path), download=False, model="cnn", width=8, epochs=1,
                          batch_size=50, runs_root=str(tmp_path / "runs"), tensorboard=False, progress="none"))
    assert res.summary["data_shape"] == [3, 32, 32] and res.summary["classes"][0] == "airplane"


def write_bad(root: Path, kind: str) -> Path:
    "One hostile or broken file (or folder) in an otherwise good image folder; returns the path the error names."
    import struct, zlib
    bad = root / "train" / "digit 1" / "bad.png"
    if kind == "truncated":
        good = next((root / "train" / "digit 1").glob("[0-9]*.png")).read_bytes()
        bad.write_bytes(good[:len(good) // 2])
    elif kind == "not an image": bad.write_text("this is a text file called .png")
    elif kind == "bomb":  # a valid PNG header declaring 100,000 x 100,000 pixels, 1 KB on disk
        ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
        chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
        bad.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(1000)))
                        + chunk(b"IEND", b""))
    elif kind == "gif frames":  # 2,000 frames of 1 pixel on a 4096x4096 screen: 46 KB on disk, 100 GB decoded
        frame = b"\x21\xf9\x04\x00\x00\x00\x00\x00\x2c" + struct.pack("<4H", 0, 0, 1, 1) + b"\x00\x02\x02\x44\x01\x00"
        bad.write_bytes(b"GIF89a" + struct.pack("<HH", 4096, 4096) + bytes([0xF0, 0, 0, 0, 0, 0, 255, 255, 255])
                        + frame * 2000 + b"\x3b")
    elif kind == "gif big frame":  # a 1x1 screen and frame, then one frame declaring 8000x8000 pixels: 30 bytes more
        frame = lambda w, h: b"\x2c" + struct.pack("<4H", 0, 0, w, h) + b"\x00\x02\x02\x44\x01\x00"
        bad.write_bytes(b"GIF89a" + struct.pack("<HH", 1, 1) + bytes([0xF0, 0, 0, 0, 0, 0, 255, 255, 255])
                        + frame(1, 1) + frame(8000, 8000) * 40 + b"\x3b")
    elif kind == "jpeg scans":  # a progressive JPEG whose last scan comes 150 times: each decodes the whole image again
        from PIL import Image
        Image.open(next((root / "train" / "digit 1").glob("[0-9]*.png"))).save(bad, "JPEG", progressive=True)
        data = bad.read_bytes(); last = data.rindex(b"\xff\xda")
        bad.write_bytes(data[:-2] + data[last:-2] * 150 + b"\xff\xd9")
    elif kind == "png text":  # a digit followed by 200 zTXt chunks of 8 MB of zeros each, 8 KB compressed: 1.6 MB on disk
        good = next((root / "train" / "digit 1").glob("[0-9]*.png")).read_bytes()
        chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
        text = chunk(b"zTXt", b"k\x00\x00" + zlib.compress(bytes(8 << 20), 9))
        bad.write_bytes(good[:33] + text * 200 + good[33:])  # after IHDR, before the pixels
    elif kind == "escapes in its name":  # another user's file name that would set your terminal's clipboard
        bad = bad.with_name("bad\x1b]52;c;Y3VybCBldmlsfHNo\x07\x1b[2K\rall good.png"); bad.write_text("no image")
    elif kind == "symlink loop": bad.symlink_to(bad)
    elif kind == "fifo": os.mkfifo(bad)
    elif kind == "empty class":
        bad = root / "train" / "zz empty"; bad.mkdir()
    return bad


@pytest.mark.parametrize("kind", ["truncated", "not an image", "bomb", "gif frames", "gif big frame", "jpeg scans", "png text",
                                  "escapes in its name", "symlink loop", "fifo", "empty class"])
def test_hostile_image_files_are_named_with_bounded_memory(folder, tmp_path, kind):
    "Each broken or hostile file gives one error naming it, in a child whose memory stays bounded; nothing hangs."
    import shutil
    root = tmp_path / "images"
    shutil.copytree(folder[0] / "train", root / "train")
    bad = write_bad(root, kind)
    errors = tmp_path / "errors.txt"

    def load():
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB
        try: load_data("image_folder", root)
        except (ValueError, FileNotFoundError) as e:
            assert one_line(bad) in str(e) and "\x1b" not in str(e), str(e)  # named, escaped
            grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
            assert grown < 300 << 10, f"grew {grown >> 10} MiB"  # a bomb decoded would need 10 GB
            return
        raise AssertionError("loaded")
    assert exit_codes([in_child(load, errors)], timeout=60) == [0], errors.read_text() if errors.exists() else ""
