"""Time to 98.0% on the official MNIST test set, training on the 10k real digits of shared/data/mnist10k:
mnist_lab's default recipe vs the pytorch/examples mnist recipe (its CNN, Adadelta lr 1.0, StepLR 0.7,
batch 64, torchvision DataLoader), reimplemented here, same data, same machine.

    python bench/time_to_98.py [--max-epochs 14] [--fp32]

Times are training wall time (test evaluations excluded, for both). mnist_lab's recipe follows a schedule
(OneCycle) fixed by its epoch count, so its time to 98% is that of the shortest run (1, 2, 3... epochs)
that ends at or above 98%; it trains on 9,000 of the 10,000 digits (1,000 held out for validation),
the reference on all 10,000."""
import argparse, tempfile, time, warnings
import torch
import torch.nn.functional as F
from common import MNIST10K, ExamplesNet, examples_loaders, torchvision_mnist_root

TARGET = 0.98


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


def ours(max_epochs: int, amp: str = "auto", channels_last: bool = True):
    import mnist_lab.train as T
    for epochs in range(1, max_epochs + 1):
        r = T.fit(T.TrainConfig(dataset="mnist", data_dir=str(MNIST10K), download=False, epochs=epochs,
                                amp=amp, channels_last=channels_last, tensorboard=False, progress="none",
                                runs_root=tempfile.mkdtemp()))
        acc = r.summary["test_accuracy"]
        print(f"  mnist_lab {epochs} epochs: test {acc:.4f}, {r.summary['train_seconds']:.1f}s of training "
              f"({r.summary['seconds']:.1f}s for the whole fit)", flush=True)
        if acc >= TARGET: return r.summary["train_seconds"], acc, epochs
    return None, acc, max_epochs


if __name__ == "__main__":
    warnings.filterwarnings("ignore")
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-epochs", type=int, default=14)
    ap.add_argument("--fp32", action="store_true", help="also time mnist_lab's recipe without bf16 and channels_last")
    a = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if a.fp32:
        t, acc, e = ours(a.max_epochs, amp="off", channels_last=False)
        print(f"mnist_lab recipe in fp32, no channels_last: {acc:.4f} after {e} epochs, {t:.1f}s")
    t_ours, acc_ours, e_ours = ours(a.max_epochs)
    t_ref, acc_ref, e_ref = reference(a.max_epochs)
    print(f"mnist_lab default recipe: {acc_ours:.4f} after {e_ours} epochs, {t_ours:.1f}s")
    print(f"pytorch/examples recipe:  {acc_ref:.4f} after {e_ref} epochs, "
          + (f"{t_ref:.1f}s" if t_ref else f"not reached in {a.max_epochs} epochs"))
    if t_ours and t_ref: print(f"speed-up to {TARGET:.0%}: {t_ref / t_ours:.1f}x")
