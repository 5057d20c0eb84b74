"""Full Fashion-MNIST (60,000 training images from Debian's dataset-fashion-mnist, official 10,000 test):
test accuracy and wall time of mnist_lab's default recipe (nothing set but the dataset).

    apt-get install dataset-fashion-mnist   # once
    python bench/fashion_60s.py [--seeds 0 1 2]"""
import argparse, tempfile, time, warnings
from common import FASHION

if __name__ == "__main__":
    warnings.filterwarnings("ignore")
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    a = ap.parse_args()
    import mnist_lab.train as T
    for seed in a.seeds:
        t = time.time()
        r = T.fit(T.TrainConfig(dataset="fashion_mnist", data_dir=str(FASHION), download=False, seed=seed,
                                tensorboard=False, progress="none", runs_root=tempfile.mkdtemp()))
        s = r.summary
        print(f"seed {seed}: test accuracy {s['test_accuracy']:.4f} after {s['epochs']} epochs on {s['n_train']:,} "
              f"images; {time.time() - t:.1f}s wall (load + train + evaluate), {s['train_seconds']:.1f}s training, "
              f"amp {s['amp']}, {s['threads']} threads")
