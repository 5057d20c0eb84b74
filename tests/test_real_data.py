"A short run on 10k real MNIST training digits, scored on the official 10k test set."
from mnist_lab.train import TrainConfig, fit


def test_small_cnn_reaches_97_percent_on_real_mnist(shared_mnist, tmp_path):
    res = fit(TrainConfig(dataset="mnist", data_dir=str(shared_mnist), download=False, model="cnn",
                          epochs=3, runs_root=str(tmp_path), tensorboard=False, progress="none"))
    s = res.summary
    assert s["n_test"] == 10_000 and s["data_official"] is False  # a local 10k subset, recorded as such
    assert s["test_accuracy"] >= 0.97, s["test_accuracy"]
