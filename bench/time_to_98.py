"""Time to 98.0% on the official MNIST test set, training on the 10k real digits of shared/data/mnist10k:
mnist_lab's default recipe vs the pytorch/examples mnist recipe (its CNN, Adadelta lr 1.0, StepLR 0.7,
batch 64, torchvision DataLoader), reimplemented here, same data, same machine.

    python bench/time_to_98.py [--seeds 0 1 2] [--max-epochs 14] [--fp32]

Times are training wall time (test evaluations excluded, for both). mnist_lab's recipe follows a schedule
(OneCycle) fixed by its epoch count, so its time to 98% is that of the shortest run (1, 2, 3... epochs)
that ends at or above 98% on average over the seeds; it trains on 9,000 of the 10,000 digits (1,000 held
out for validation), the reference (its own seed, 1) on all 10,000. Targets: mnist_lab reaches 98%, and
TARGET_SPEEDUP times sooner than the reference; on a CPU with AMX, within AMX_TARGET_S seconds of training."""
import argparse, tempfile, time, warnings
import torch
import torch.nn.functional as F
from mnist_lab.train import cpu_flags
from common import MNIST10K, ExamplesNet, examples_loaders, torchvision_mnist_root, finish, mean_std

TARGET = 0.98
TARGET_SPEEDUP = 10
AMX_TARGET_S = 1.0


def reference(max_epochs: int):
    torch.manual_seed(1)  # pytorch/examples' default seed
    train, test = examples_loaders(torchvision_mnist_root())
    model = ExamplesNet()
    opt = torch.optim.Adadelta(model.parameters(), lr=1.0)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.7)
    train_time = 0.0
    for epoch in range(1, max_epochs + 1):
        t = time.time()
        model.train()
        for x, y in train:
            opt.zero_grad()
            F.nll_loss(model(x), y).backward()
            opt.step()
        sched.step()
        train_time += time.time() - t
        model.eval()
        with torch.no_grad():
            correct = sum((model(x).argmax(1) == y).sum().item() for x, y in test)
        acc = correct / len(test.dataset)
        print(f"  reference epoch {epoch}: test {acc:.4f}, {train_time:.1f}s of training", flush=True)
        if acc >= TARGET: return train_time, acc, epoch
    return None, acc, max_epochs


def ours(max_epochs: int, seeds, amp: str = "auto", channels_last: bool = True) -> dict:
    "The shortest run (in epochs) whose test accuracy, averaged over `seeds`, reaches TARGET."
    import mnist_lab.train as T
    for epochs in range(1, max_epochs + 1):
        runs = [T.fit(T.TrainConfig(dataset="mnist", data_dir=str(MNIST10K), download=False, epochs=epochs, seed=s,
                                    amp=amp, channels_last=channels_last, tensorboard=False, progress="none",
                                    runs_root=tempfile.mkdtemp())).summary for s in seeds]
        acc, t = mean_std(r["test_accuracy"] for r in runs), mean_std(r["train_seconds"] for r in runs)
        print(f"  mnist_lab {epochs} epochs, seeds {list(seeds)}: test {acc[0]:.4f} ± {acc[1]:.4f}, "
              f"{t[0]:.2f} ± {t[1]:.2f}s of training, amp {runs[0]['amp']}", flush=True)
        if acc[0] >= TARGET: break
    return {"epochs": epochs, "seeds": list(seeds), "test_accuracy": acc, "train_seconds": t, "amp": runs[0]["amp"],
            "reached": acc[0] >= TARGET}


if __name__ == "__main__":
    warnings.filterwarnings("ignore")
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--max-epochs", type=int, default=14)
    ap.add_argument("--fp32", action="store_true", help="also time mnist_lab's recipe without bf16 and channels_last")
    a = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    result = {}
    if a.fp32: result["mnist_lab_fp32"] = ours(a.max_epochs, a.seeds, amp="off", channels_last=False)
    result["mnist_lab"] = m = ours(a.max_epochs, a.seeds)
    t_ref, acc_ref, e_ref = reference(a.max_epochs)
    result["reference"] = {"epochs": e_ref, "test_accuracy": acc_ref, "train_seconds": t_ref, "seed": 1}
    print(f"mnist_lab default recipe: {m['test_accuracy'][0]:.4f} after {m['epochs']} epochs, "
          f"{m['train_seconds'][0]:.2f}s (mean of {len(a.seeds)} seeds)")
    print(f"pytorch/examples recipe:  {acc_ref:.4f} after {e_ref} epochs, "
          + (f"{t_ref:.1f}s" if t_ref else f"not reached in {a.max_epochs} epochs"))
    speedup = result["speedup"] = t_ref / m["train_seconds"][0] if t_ref and m["reached"] else None
    if speedup: print(f"speed-up to {TARGET:.0%}: {speedup:.1f}x")
    targets = {f"mnist_lab reaches {TARGET:.0%} (mean of the seeds)": m["reached"],
               f"{TARGET_SPEEDUP}x sooner than the pytorch/examples recipe": speedup is not None and speedup >= TARGET_SPEEDUP}
    if "amx_bf16" in cpu_flags():  # issue #34's goal where the matrix units are: 1 s of training
        targets[f"{TARGET:.0%} within {AMX_TARGET_S:.0f} s of training (a CPU with AMX)"] = (
            m["reached"] and m["train_seconds"][0] <= AMX_TARGET_S)
    finish("time_to_98", result, targets)
