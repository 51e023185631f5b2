"""PoseRegressor: network contract, fast_dev_run of every pose experiment, the report, learning."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import hydra
import pytest
import torch

from occaist.models.pose_regression.networks import PoseRegressionNet
from occaist.tasks import train
from tests.helpers import composed

EXPERIMENTS = ("pose_none", "pose_dr", "pose_aist", "pose_dr_aist")
#: A small network and batch: a step takes milliseconds on a CPU.
SMALL = [
    "data.image_size=32",
    "data.batch_size=4",
    "data.eval_batch_size=6",
    "data.num_points=200",
    "model.net.channels=[8,16]",
    "model.net.hidden=32",
    "model.projection_points=200",
    "model.projection_grid=16",
    "extras.num_threads=1",
]


def test_network_selects_each_objects_head_and_returns_unit_quaternions() -> None:
    torch.manual_seed(0)
    net = PoseRegressionNet(num_objects=3, image_size=32, channels=[8, 16], hidden=16).eval()
    image = torch.rand(2, 3, 32, 32)
    a, b = net(image, torch.tensor([0, 2])), net(image, torch.tensor([1, 2]))
    assert (
        a["box"].shape == (2, 4) and a["centre"].shape == (2, 2) and a["log_depth"].shape == (2,)
    )
    assert torch.allclose(a["quaternion"].norm(dim=-1), torch.ones(2))
    assert not torch.allclose(a["box"][0], b["box"][0]) and torch.equal(a["box"][1], b["box"][1])
    with pytest.raises(ValueError, match="divisible"):
        PoseRegressionNet(image_size=30, channels=[8, 16])


def _stylised_copy(world: Path, tmp: Path) -> Path:
    """A BOP root whose ``*_aist`` splits are the plain ones (identity stylisation)."""
    src, dst = world / "bop" / "occaist", tmp / "bop"
    dst.mkdir()
    for name in ("models", "test", "train_plain", "train_dr"):
        (dst / name).symlink_to(src / name)
    (dst / "train_plain_aist").symlink_to(src / "train_plain")
    (dst / "train_dr_aist").symlink_to(src / "train_dr")
    return dst


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_fast_dev_run_of_each_experiment_writes_the_report(
    experiment: str, tiny_world: Path, tmp_path: Path
) -> None:
    root = _stylised_copy(tiny_world, tmp_path)
    overrides = [f"experiment={experiment}", f"data.root={root}", "trainer.fast_dev_run=true",
                 "~logger", "~callbacks.rich_progress_bar", "~callbacks.lr_monitor",
                 "model.lambda_projection=1.0",
                 "model.lambda_reg=1e-4", *SMALL]  # fmt: skip
    with composed(overrides, output_dir=tmp_path / "run") as cfg:
        metrics, objects = train(cfg)
    assert torch.isfinite(torch.tensor(metrics["train/loss"]))
    assert {"train/loss_projection", "train/loss_reg", "test/add", "test/adds"} <= set(metrics)
    assert objects["model"].augmenter is not None if "dr" in experiment else True
    rows = list(csv.DictReader((tmp_path / "run" / "eval" / "pose_accuracy.csv").open()))
    assert {r["method"] for r in rows} == {"model", "mean training pose"}
    samples = list(csv.DictReader((tmp_path / "run" / "eval" / "pose_samples.csv").open()))
    assert len(samples) == 6  # fast_dev_run: one test batch
    add = [float(r["add"]) for r in samples]
    adds = [float(r["adds"]) for r in samples]
    assert all(s <= a + 1e-6 for s, a in zip(adds, add))
    model_all = next(r for r in rows if r["method"] == "model" and r["object"] == "all")
    diam = [float(r["diameter"]) for r in samples]
    assert float(model_all["ADD"]) == pytest.approx(
        100 * sum(a < 0.1 * d for a, d in zip(add, diam)) / 6, abs=0.06
    )
    summary = json.loads((tmp_path / "run" / "eval" / "summary_test.json").read_text())
    assert summary["samples"] == 6


def test_training_fits_a_few_images_and_the_baseline_is_their_mean(
    tiny_world: Path, tmp_path: Path
) -> None:
    """Overfitting 4 images: the loss falls; the mean-pose baseline holds the training mean."""
    overrides = ["experiment=pose_none", f"data.root={tiny_world / 'bop' / 'occaist'}",
                 "~logger", "~callbacks", "data.obj_ids=[2]", "data.max_images=4",
                 "data.train_split=test", "data.val_split=test", "trainer.max_steps=60",
                 "trainer.check_val_every_n_epoch=1000", "test=false", "model.optimizer.lr=3e-3",
                 *SMALL]  # fmt: skip
    with composed(overrides, output_dir=tmp_path) as cfg:
        _, objects = train(cfg)
        untrained = hydra.utils.instantiate(cfg.model)
    model, data = objects["model"], objects["datamodule"]
    batch = torch.utils.data.default_collate([data.data_train[i] for i in range(4)])
    losses = {}
    for name, module in (("before", untrained), ("after", model)):
        module.eval()
        with torch.no_grad():
            pred = module(batch["image"], batch["K"], batch["obj_index"], batch["diameter"])
            losses[name] = module.losses(batch, pred)
    assert losses["after"]["total"] < 0.3 * losses["before"]["total"]
    assert losses["after"]["rotation"] < 0.6 * losses["before"]["rotation"]
    R0, t0 = model.mean_training_pose(torch.tensor([0]))
    assert torch.allclose(t0[0], batch["t"].mean(0), atol=1e-3)
    assert torch.allclose(R0[0] @ R0[0].T, torch.eye(3), atol=1e-5)


def test_silhouette_panels_reach_tensorboard(tiny_world: Path, tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    overrides = ["experiment=pose_none", f"data.root={tiny_world / 'bop' / 'occaist'}",
                 "logger=tensorboard", "~callbacks", "trainer.max_steps=2", "test=false",
                 "trainer.check_val_every_n_epoch=1000", "model.image_log_every_n_steps=1",
                 *SMALL]  # fmt: skip
    with composed(overrides, output_dir=tmp_path) as cfg:
        train(cfg)
    events = EventAccumulator(str(next((tmp_path / "tensorboard").rglob("events.*")).parent))
    events.Reload()
    images = events.Images("train/silhouettes")
    assert len(images) == 2 and images[0].width > 32  # a grid of several 32-pixel panels
