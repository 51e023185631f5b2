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
    assert (objects["model"].randomizer is not None) == ("dr" in experiment)
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


def _blob_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Two 24-pixel images: a two-coloured square object (left half red, right half blue) on a
    background of one odd grey that no texture draws exactly."""
    image = torch.full((2, 3, 24, 24), 0.123)
    mask = torch.zeros(2, 1, 24, 24)
    mask[:, :, 6:18, 6:18] = 1
    image[:, :, 6:18, 6:12] = torch.tensor([0.8, 0.1, 0.1])[:, None, None]
    image[:, :, 6:18, 12:18] = torch.tensor([0.1, 0.1, 0.8])[:, None, None]
    return image, mask


def test_randomizer_replaces_the_background_and_leaves_the_object_alone_when_told() -> None:
    from occaist.models.pose_regression.randomization import DomainRandomizer

    torch.manual_seed(0)
    image, mask = _blob_batch()
    out = DomainRandomizer(p_background=1.0, p_object=0.0)(image, mask)
    inside, outside = mask.bool().expand_as(image), ~mask.bool().expand_as(image)
    assert torch.equal(out[inside], image[inside])  # the object (and so its pose) is untouched
    assert (out[outside] - 0.123).abs().min() > 1e-6  # every background pixel is new
    assert out.min() >= 0 and out.max() <= 1
    again = DomainRandomizer(p_background=1.0, p_object=0.0)(image, mask)
    assert not torch.allclose(again[outside], out[outside])  # fresh at every call


def test_randomizer_recolours_the_object_only_and_keeps_its_parts_apart() -> None:
    from occaist.models.pose_regression.randomization import DomainRandomizer

    torch.manual_seed(1)
    image, mask = _blob_batch()
    out = DomainRandomizer(p_background=0.0, p_object=1.0, shading=0.0)(image, mask)
    outside = ~mask.bool().expand_as(image)
    assert torch.equal(out[outside], image[outside])
    left, right = out[:, :, 6:18, 6:12], out[:, :, 6:18, 12:18]
    assert not torch.allclose(left, image[:, :, 6:18, 6:12], atol=0.02)
    # each part changes as a whole (one colour per part), and the two parts stay different
    assert torch.allclose(left, left[:, :, :1, :1].expand_as(left), atol=1e-6)
    assert ((left[:, :, 0, 0] - right[:, :, 0, 0]).abs().sum(1) > 0.2).all()


def test_hue_rotation_turns_about_the_grey_axis() -> None:
    from occaist.models.pose_regression.randomization import _rotate_hue

    rgb = torch.tensor([[1.0, 0.0, 0.0], [0.3, 0.3, 0.3]]).view(2, 3, 1, 1)
    third = torch.full((2,), 2 * torch.pi / 3)
    turned = _rotate_hue(rgb, third).view(2, 3)
    assert torch.allclose(turned[0], torch.tensor([0.0, 1.0, 0.0]), atol=1e-6)  # red -> green
    assert torch.allclose(turned[1], torch.tensor([0.3, 0.3, 0.3]), atol=1e-6)  # grey stays
    assert torch.allclose(_rotate_hue(rgb, torch.zeros(2)), rgb)


def test_training_step_feeds_the_network_the_randomised_batch(
    tiny_world: Path, tmp_path: Path
) -> None:
    """pose_dr's randomiser is built from the config and its output is what the network sees."""
    overrides = ["experiment=pose_dr", f"data.root={tiny_world / 'bop' / 'occaist'}",
                 "data.train_split=train_plain", "~logger", "~callbacks",
                 "trainer.max_steps=1", "test=false", "trainer.check_val_every_n_epoch=1000",
                 "model.augment=false", *SMALL]  # fmt: skip
    seen = []
    with composed(overrides, output_dir=tmp_path) as cfg:
        model = hydra.utils.instantiate(cfg.model)
        model.net.register_forward_pre_hook(lambda _, args: seen.append(args[0].clone()))
        data = hydra.utils.instantiate(cfg.data)
        data.setup("fit")
        batch = torch.utils.data.default_collate([data.data_train[i] for i in range(4)])
        torch.manual_seed(0)
        model.training_step(batch, 0)
    assert type(model.randomizer).__name__ == "DomainRandomizer"
    near = torch.nn.functional.max_pool2d(batch["mask"], 5, stride=1, padding=2)
    outside = (near == 0).expand_as(batch["image"])  # away from the object's blurred edge
    # the plain split's background is black; the network saw textures there
    assert batch["image"][outside].max() < 0.05 and seen[0][outside].std() > 0.05


def test_test_step_breaks_the_add_error_into_rotation_and_translation() -> None:
    """A prediction with the true rotation and a shifted location fails only on translation; one
    turned half about the model's y axis is 180° off, and 0° up to that half turn."""
    from occaist.evaluation.pose import pose_accuracy_rows
    from occaist.models.pose_regression.module import PoseRegressor

    torch.manual_seed(0)
    net = PoseRegressionNet(num_objects=1, image_size=32, channels=[8, 16], hidden=16)
    model = PoseRegressor(net, optimizer=None, num_objects=1, image_size=32)
    R = torch.linalg.qr(torch.randn(2, 3, 3))[0]
    R = R * torch.linalg.det(R).sign()[:, None, None]  # proper rotations
    t = torch.tensor([[0.0, 0.0, 500.0], [10.0, -5.0, 400.0]])
    half = torch.diag(torch.tensor([-1.0, 1.0, -1.0]))
    shift = torch.tensor([[30.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    pred_R = torch.stack([R[0], R[1] @ half])
    model.forward = lambda *_: {"R": pred_R, "t": t + shift}
    batch = {"image": torch.zeros(2, 3, 32, 32), "K": torch.eye(3).expand(2, 3, 3),
             "obj_index": torch.zeros(2, dtype=torch.long), "obj_id": torch.ones(2).long(),
             "diameter": torch.full((2,), 100.0), "points": torch.randn(2, 50, 3) * 30,
             "R": R, "t": t, "box": torch.zeros(2, 4), "symmetric": torch.zeros(2).bool(),
             "scene_id": torch.ones(2).long(), "im_id": torch.arange(2),
             "inst_id": torch.zeros(2).long()}  # fmt: skip
    model.losses = lambda *_: {"total": torch.tensor(0.0)}
    records = model.test_step(batch, 0)["records"]
    first, second = records
    assert first["add_true_translation"] == pytest.approx(0.0, abs=1e-4)  # rotation is exact
    assert first["add_true_rotation"] == pytest.approx(30.0, rel=1e-4) == first["add"]
    assert second["rot_err_deg"] == pytest.approx(180.0, abs=0.1)
    assert second["rot_err_half_turn_deg"] == pytest.approx(0.0, abs=0.1)
    assert second["add_true_rotation"] == pytest.approx(0.0, abs=1e-4)
    assert second["add_true_translation"] == pytest.approx(second["add"]) and second["add"] > 10
    row = next(r for r in pose_accuracy_rows(records) if r["object"] == "all")
    assert row["ADD"] == 0.0 and row["ADD true R"] == 50.0 and row["ADD true t"] == 50.0
    assert row["over_150deg"] == 50.0
