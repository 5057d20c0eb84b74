"""The training engine on scripted metrics and tiny real runs: best.pt, early stopping, reduce_on_plateau,
iteration-based training, fine-tuning, NaN stops, and what status.json says when training is interrupted."""
import itertools, json, math
import pytest
import torch
import mnist_lab.train as T, mnist_lab.record as R

TINY = dict(dataset="mnist_sample", model="linear", batch_size=100, steps_per_epoch=2, scheduler="none",
            tensorboard=False, progress="none")


@pytest.fixture
def scripted(monkeypatch):
    "Replace the validation metric by a script: `scripted(key, [v1, v2, ...])`, one value per epoch."
    def install(key, values):
        values, real = list(values), T.evaluate
        def fake(model, x, y, *args, **kw):
            out = real(model, x, y, *args, **kw)
            if len(y) == 500 and values: out[key.removeprefix("val_")] = values.pop(0)  # the val split
            return out
        monkeypatch.setattr(T, "evaluate", fake)
    return install


def cfg(tmp_path, **kw) -> T.TrainConfig:
    return T.TrainConfig(**{**TINY, "runs_root": str(tmp_path), **kw})


def ckpt_epoch(path) -> int: return R.load_checkpoint(path)["state"]["epoch"]


def test_early_stop_at_the_right_epoch_and_best_pt_tracks_the_monitor(tmp_path, scripted):
    scripted("val_accuracy", [0.5, 0.7, 0.6, 0.65, 0.9, 0.95])
    res = T.fit(cfg(tmp_path, epochs=6, early_stop=2, monitor="max val_accuracy"))
    s = res.summary
    assert (s["epochs"], s["stopped_early"], s["best_epoch"], s["best"]) == (4, True, 2, 0.7)
    assert [h["val_accuracy"] for h in res.history] == [0.5, 0.7, 0.6, 0.65]
    assert ckpt_epoch(res.run_dir / "best.pt") == 2 and ckpt_epoch(res.run_dir / "last.pt") == 4
    assert R.load_checkpoint(res.run_dir / "best.pt")["state"]["best"] == 0.7


def test_best_pt_is_saved_on_improvement_even_between_save_periods(tmp_path, scripted):
    "pytorch-template only writes best on save epochs; here best.pt follows every improvement."
    scripted("val_loss", [1.0, 0.8, 0.9, 0.95, 0.99])
    res = T.fit(cfg(tmp_path, epochs=5, save_period=3, monitor="min val_loss"))
    assert ckpt_epoch(res.run_dir / "best.pt") == 2  # epoch 2 is not a save epoch
    assert ckpt_epoch(res.run_dir / "last.pt") == 5
    assert res.summary["best"] == 0.8 and not res.summary["stopped_early"]


def test_reduce_on_plateau_follows_the_monitored_metric(tmp_path, scripted):
    scripted("val_accuracy", [0.5, 0.5, 0.5, 0.5, 0.5])
    res = T.fit(cfg(tmp_path, epochs=5, lr=0.1, optimizer="sgd", scheduler="reduce_on_plateau",
                    lr_patience=1, gamma=0.5, monitor="max val_accuracy"))
    # epoch 1 sets the best; epochs 2 and 3 do not improve, patience 1 is exceeded after epoch 3
    assert [h["lr"] for h in res.history] == pytest.approx([0.1, 0.1, 0.1, 0.05, 0.05])


@pytest.mark.parametrize("scheduler,check", [
    ("step", lambda lrs: lrs == pytest.approx([0.1, 0.05, 0.025])),
    ("multistep", lambda lrs: lrs == pytest.approx([0.1, 0.1, 0.05])),
    ("exponential", lambda lrs: lrs == pytest.approx([0.1, 0.05, 0.025])),
    ("cosine", lambda lrs: lrs[0] > lrs[1] > lrs[2] and lrs[0] < 0.1),  # stepped per batch
    ("onecycle", lambda lrs: lrs[0] > lrs[1] > lrs[2] and max(lrs) <= 0.1),  # the last: its last step's, not past the end
])
def test_schedulers_log_the_current_lr(tmp_path, scheduler, check):
    res = T.fit(cfg(tmp_path, epochs=3, lr=0.1, optimizer="sgd", scheduler=scheduler, gamma=0.5,
                    milestones="2"))
    lrs = [h["lr"] for h in res.history]
    assert check(lrs), lrs


def test_the_last_lr_is_the_one_the_last_step_used(tmp_path):
    "A short onecycle run: the lr shown for the last epoch is its last step's (the lowest), not one past the schedule."
    res = T.fit(cfg(tmp_path, epochs=3, steps_per_epoch=2, lr=0.1, optimizer="sgd", scheduler="onecycle"))
    lrs = [h["lr"] for h in res.history]
    assert lrs[-1] == min(lrs) and lrs[-1] < 1e-3, lrs


def test_max_steps_and_steps_per_epoch(tmp_path):
    res = T.fit(cfg(tmp_path, epochs=50, steps_per_epoch=3, max_steps=7))
    assert [h["step"] for h in res.history] == [3, 6, 7]  # max_steps wins over epochs; the last epoch is short
    assert res.summary["steps"] == 7


def test_init_from_loads_weights_with_a_fresh_optimizer(tmp_path):
    from mnist_lab.eval import export_safetensors
    first = T.fit(cfg(tmp_path, epochs=1))
    # every form the weights travel in: a checkpoint, model.pt, a safetensors export, the run folder
    forms = [first.run_dir / "best.pt", first.run_dir / "model.pt", export_safetensors(first.run_dir), first.run_dir]
    for a, b in itertools.pairwise([R.read_model(f)[0] for f in forms]):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    n_runs = len(list((tmp_path / "run").iterdir()))
    # the error names what the weights were trained as: old runs (no pool_first stored) say pool_first=False
    with pytest.raises(ValueError, match=r"init_from=.*\(its config: model='linear', .*\): the weights do not fit this model \("):
        T.fit(cfg(tmp_path, epochs=1, init_from=str(first.run_dir), model="mlp"))
    assert len(list((tmp_path / "run").iterdir())) == n_runs  # refused before a run folder was made
    second = T.fit(cfg(tmp_path, epochs=1, init_from=str(first.run_dir), lr=1e-9, optimizer="sgd", momentum=0.0))
    # with lr ~ 0 the fine-tuned model is the loaded one, and its run is a new folder
    assert second.run_dir != first.run_dir
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(first.model.state_dict().values(),
                                                                second.model.state_dict().values()))
    assert R.load_checkpoint(second.run_dir / "last.pt")["optimizer"]["param_groups"][0]["lr"] == 1e-9


def test_nan_loss_stops_at_once_and_keeps_the_last_good_checkpoint(tmp_path):
    ok = T.fit(cfg(tmp_path, epochs=1, run_dir=str(tmp_path / "r")))
    good = R.load_checkpoint(ok.run_dir / "last.pt")
    # lr 1e30: step 1 sees a finite loss, its update blows the weights up, step 2 sees inf/nan and stops
    with pytest.raises(FloatingPointError, match=r"loss is (nan|inf) at epoch 1, step 2:"):
        T.fit(cfg(tmp_path, epochs=3, lr=1e30, optimizer="sgd", model="mlp"))
    failed = next((tmp_path / "run").iterdir())
    status = json.loads((failed / "status.json").read_text())
    assert status["status"] == "failed" and "FloatingPointError" in status["error"]
    rows = [json.loads(l) for l in (failed / "metrics.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["train_loss"]) for r in rows)  # no NaN row was written
    assert torch.equal(R.load_checkpoint(ok.run_dir / "last.pt")["model"]["1.weight"], good["model"]["1.weight"])


@pytest.mark.parametrize("exc", [KeyboardInterrupt, SystemExit])
def test_interrupted_training_is_never_recorded_as_completed(tmp_path, monkeypatch, exc):
    def boom(*a, **k): raise exc(0) if exc is SystemExit else exc()
    monkeypatch.setattr(T, "augment_batch", boom)
    with pytest.raises(exc):
        T.fit(cfg(tmp_path, epochs=2, augment="shift", run_dir=str(tmp_path / "x")))
    s = R.run_status(tmp_path / "x")
    assert s["status"] == ("stopped" if exc is KeyboardInterrupt else "failed") and exc.__name__ in s["error"]
    assert not (tmp_path / "x" / "summary.json").exists()


def test_resume_refuses_changes_that_would_alter_the_result(tmp_path):
    first = T.fit(cfg(tmp_path, epochs=1, run_dir=str(tmp_path / "r")))
    with pytest.raises(ValueError, match=r"\['lr'\] differ"):
        T.fit(cfg(tmp_path, resume=str(first.run_dir), lr=0.5))
    started = R.run_status(first.run_dir)["started"]
    more = T.fit(cfg(tmp_path, resume=str(first.run_dir), epochs=3))  # epochs may grow on resume
    assert more.run_dir == first.run_dir and [h["epoch"] for h in more.history] == [1, 2, 3]
    # durations add up over the parts of a run, and it keeps its first start time
    assert more.summary["seconds"] > first.summary["seconds"]
    assert R.run_status(first.run_dir)["started"] == started
    # resuming a completed run changes nothing that was recorded
    files = {p: p.read_bytes() for p in first.run_dir.rglob("*") if p.is_file()}
    again = T.fit(cfg(tmp_path, resume=str(first.run_dir), epochs=3))
    assert {p: p.read_bytes() for p in first.run_dir.rglob("*") if p.is_file()} == files
    assert again.summary == more.summary


def test_tensorboard_has_scalars_lr_histograms_images_and_hparams(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    res = T.fit(cfg(tmp_path, epochs=2, augment="shift,erase", tensorboard=True))
    runs = [EventAccumulator(str(d), size_guidance={"histograms": 0, "images": 0}).Reload()
            for d in {p.parent for p in (res.run_dir / "tb").rglob("events.out.tfevents.*")}]
    tags = {kind: set().union(*(r.Tags()[kind] for r in runs)) for kind in ("scalars", "histograms", "images")}
    assert {"train/loss", "train/accuracy", "val/loss", "val/accuracy", "val/top_k", "lr"} <= tags["scalars"]
    assert "hparam/test_accuracy" in tags["scalars"]
    assert any(t.startswith("weights/") for t in tags["histograms"]) and any(t.startswith("grads/") for t in tags["histograms"])
    assert "inputs" in tags["images"]
    assert len([e for r in runs if "val/loss" in r.Tags()["scalars"] for e in r.Scalars("val/loss")]) == 2  # per epoch


def test_cpu_options_bf16_channels_last_deterministic(tmp_path, monkeypatch):
    # a hook inside the model sees what training really ran with: an option that fit ignored fails here
    seen, real_build = [], T.build
    def spy_build(*a, **k):
        parts = real_build(*a, **k)
        conv2 = [m for m in parts.model.modules() if isinstance(m, torch.nn.Conv2d)][1]  # its input has channels > 1
        conv2.register_forward_hook(lambda m, i, o: seen.append(
            (o.dtype, i[0].is_contiguous(memory_format=torch.channels_last),
             torch.are_deterministic_algorithms_enabled(), torch.get_num_threads())) if m.training else None)
        return parts
    monkeypatch.setattr(T, "build", spy_build)
    try:  # fit gives the caller back its thread count itself; deterministic mode stays on until switched off
        res = T.fit(cfg(tmp_path, model="cnn", epochs=1, steps_per_epoch=15, amp="bf16", scheduler="onecycle",
                        channels_last=True, deterministic=True, threads=1))
    finally: torch.use_deterministic_algorithms(False)
    assert res.summary["test_accuracy"] > 0.3 and res.summary["threads"] == 1 and res.summary["amp"] == "bf16"
    assert len(seen) == 15 and set(seen) == {(torch.bfloat16, True, True, 1)}, set(seen)


def test_a_resume_refuses_a_tensorboard_folder_others_may_write(tmp_path):
    "TensorBoard names its next events file by path: in a tb/ others may write, a link of theirs could take its name."
    kw = dict(dataset="mnist_sample", model="linear", steps_per_epoch=3, scheduler="none", progress="none")
    run = T.fit(T.TrainConfig(**kw, epochs=1, runs_root=str(tmp_path / "runs"))).run_dir
    (run / "tb").chmod(0o777)
    with pytest.raises(PermissionError, match=f"TensorBoard's folder: {run}/tb is writable by anyone"):
        T.fit(T.TrainConfig(**kw, epochs=2, resume=str(run)))
