"""PointCloudPoseNet end to end on the tiny world: fast_dev_run of the experiment, an overfit
run that must halve the projection loss, and eval.py on a saved checkpoint."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from occaist.tasks import evaluate, train
from tests.helpers import composed

#: Shrinks the paper-sized model so that a step takes milliseconds on a CPU.
SMALL = [
    "data.image_size=32",
    "data.batch_size=2",
    "data.views_per_model=2",
    "data.eval_batch_size=2",
    "data.num_workers=0",
    "model.net.num_points=200",
    "model.net.encoder_channels=[8,16]",
    "model.net.fc_dim=64",
    "model.vox_size=16",
    "model.gauss_kernel_size=5",
    "model.icp_iterations=5",
    "model.icp_num_points=200",
]


def _root(world: Path) -> str:
    return f"data.root={world / 'shapenet_renders'}"


@pytest.mark.slow
@pytest.mark.parametrize(
    "variant",
    [
        [],
        ["model.camera_supervised=true", "model.net.predict_pose=false", "model.projection=max"],
        ["model.net.predict_rgb=true", "model.rgb_loss_weight=1.0"],
    ],
    ids=["unsupervised", "camera_supervised_max", "rgb_loss"],
)
def test_fast_dev_run_writes_the_evaluation(tiny_world: Path, tmp_path: Path, variant) -> None:
    overrides = ["experiment=dpc_baseline", _root(tiny_world), "trainer.fast_dev_run=true",
                 "~logger", "callbacks=evaluation", *SMALL, *variant]  # fmt: skip
    with composed(overrides, output_dir=tmp_path) as cfg:
        metrics, _ = train(cfg)
    assert torch.isfinite(torch.tensor(metrics["train/loss"]))
    assert ("train/loss_rgb" in metrics) == ("model.rgb_loss_weight=1.0" in variant)
    summary = json.loads((tmp_path / "eval" / "summary_test.json").read_text())
    rows = list(csv.DictReader((tmp_path / "eval" / "per_model_test.csv").open()))
    assert summary["models"] == len(rows) == 2  # fast_dev_run: one test batch of two models
    assert summary["chamfer"] == pytest.approx(summary["precision"] + summary["coverage"])
    assert summary["chamfer"] == pytest.approx(metrics["test/chamfer"], rel=1e-5)
    assert summary["views"] == 10 and summary["mask_xor"] == pytest.approx(
        sum(float(r["mask_xor"]) for r in rows) / 2, rel=1e-5
    )
    methods = json.loads((tmp_path / "eval" / "methods_test.json").read_text())
    assert methods[0]["method"].startswith("model")
    assert methods[0]["chamfer"] == pytest.approx(summary["chamfer"])
    template = [m for m in methods if m["method"].startswith("baseline: template")]
    assert len(template) == 1 and template[0]["chamfer"] > 0
    if "model.camera_supervised=true" in variant:
        assert "acc30" not in summary and summary["camera_supervised"]
    else:
        assert 0.0 <= summary["acc30"] <= 1.0 and 0.0 <= summary["median_deg"] <= 180.0
        assert summary["acc30"] <= summary["oracle_acc30"]  # the oracle is an upper bound
        assert 0.0 <= summary["relative_acc30"] <= 1.0
        assert sum(summary["win_fractions"]) == pytest.approx(1.0)
        assert len(summary["win_fractions"]) == 4
        alignment = json.loads((tmp_path / "eval" / "alignment.json").read_text())
        assert alignment["reference_rotation_wxyz"] == pytest.approx(summary["reference_rotation"])
        assert 0.0 <= alignment["angle_to_oracle_deg"] <= 180.0
        assert (tmp_path / "eval" / "pose_errors_test.png").is_file()
        assert {m["method"] for m in methods} >= {
            "model (ICP alignment)", "model (oracle alignment)",
            "baseline: one pose for all views (oracle)", "baseline: uniformly random pose",
        }  # fmt: skip
        assert all(len(r["winners"].split()) == 5 for r in rows)
        assert all(len(r["errors_deg"].split()) == 5 for r in rows)


@pytest.mark.slow
def test_overfit_halves_the_projection_loss(tiny_world: Path, tmp_path: Path) -> None:
    overrides = [
        "experiment=dpc_baseline", _root(tiny_world), "logger=csv", "~callbacks", *SMALL,
        "trainer.max_steps=60", "trainer.overfit_batches=1", "trainer.limit_val_batches=0",
        "trainer.log_every_n_steps=1", "test=false", "model.optimizer.lr=2e-3",
        "model.sigma_start=1.0", "model.sigma_end=1.0", "model.keep_prob_start=1.0",
        "model.net.num_candidates=1", "model.image_log_every_n_steps=0",
    ]  # fmt: skip
    with composed(overrides, output_dir=tmp_path) as cfg:
        train(cfg)
    rows = list(csv.DictReader(next(tmp_path.rglob("metrics.csv")).open()))
    losses = [float(r["train/loss_proj"]) for r in rows if r.get("train/loss_proj")]
    assert len(losses) >= 50
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.5 * first, f"projection loss {first:.2f} -> {last:.2f}"


@pytest.mark.slow
def test_eval_py_evaluates_a_checkpoint_on_any_split(tiny_world: Path, tmp_path: Path) -> None:
    fit_dir, eval_dir = tmp_path / "fit", tmp_path / "eval_run"
    overrides = ["experiment=dpc_baseline", _root(tiny_world), "~logger", *SMALL,
                 "~callbacks.rich_progress_bar", "~callbacks.lr_monitor", "trainer.max_steps=3",
                 "trainer.check_val_every_n_epoch=1",
                 "trainer.limit_val_batches=1", "test=false"]  # fmt: skip
    with composed(overrides, output_dir=fit_dir) as cfg:
        train(cfg)
    ckpt = fit_dir / "checkpoints" / "last.ckpt"
    stored = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    eval_overrides = ["experiment=dpc_baseline", _root(tiny_world), f"ckpt_path={ckpt}",
                      "eval_split=val", "~logger", *SMALL]  # fmt: skip
    with composed(eval_overrides, config_name="eval.yaml", output_dir=eval_dir) as cfg:
        assert cfg.data.test_split == "val"
        metrics, _ = evaluate(cfg)
    summary = json.loads((eval_dir / "eval" / "summary_val.json").read_text())
    assert summary["split"] == "val" and summary["models"] == 2
    assert summary["reference_rotation"] == pytest.approx(
        stored["reference_rotation"].tolist(), abs=1e-6
    )
    assert summary["acc30"] == pytest.approx(metrics["test/acc30"])
    assert stored["reference_rotation"].tolist() != [1.0, 0.0, 0.0, 0.0]  # validation ran
    # re-estimating the alignment before testing (after the evaluator is built): the report
    # names the rotation the test step used, not the checkpoint's
    realign = [*eval_overrides, "model.realign_on_test=true", "eval_split=test"]
    with composed(realign, config_name="eval.yaml", output_dir=tmp_path / "realigned") as cfg:
        _, objects = evaluate(cfg)
    used = objects["model"].reference_rotation.tolist()
    again = json.loads((tmp_path / "realigned" / "eval" / "summary_test.json").read_text())
    assert again["reference_rotation"] == pytest.approx(used, abs=1e-6)
    alignment = json.loads((tmp_path / "realigned" / "eval" / "alignment.json").read_text())
    assert alignment["reference_rotation_wxyz"] == pytest.approx(used, abs=1e-6)


@pytest.mark.slow
def test_panels_are_logged_to_tensorboard(tiny_world: Path, tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    overrides = ["experiment=dpc_baseline", _root(tiny_world), "logger=tensorboard",
                 "~callbacks", *SMALL, "trainer.max_steps=1", "trainer.limit_val_batches=0",
                 "test=false", "model.image_log_every_n_steps=1"]  # fmt: skip
    with composed(overrides, output_dir=tmp_path) as cfg:
        train(cfg)
    events = EventAccumulator(str(next(tmp_path.rglob("events.out.tfevents.*")).parent))
    events.Reload()
    assert "train/panels" in events.Tags()["images"]
    image = events.Images("train/panels")[0]
    # one row per shown model: input, mask, K = 4 candidates and the cloud, 16 px tiles
    assert image.width == 7 * 16 + 8 * 2 and image.height == 2 * 16 + 3 * 2


@pytest.mark.parametrize("scale", [1.0, 10.0])
def test_student_lr_scale_speeds_up_only_the_student_head(scale: float) -> None:
    """Every parameter is optimised exactly once; the student's rate is scale x the base."""
    import functools

    from occaist.models.dpc.module import PointCloudPoseNet
    from occaist.models.dpc.networks import DPCNet

    net = DPCNet(image_size=32, num_points=10, encoder_channels=[4, 8], fc_dim=16)
    module = PointCloudPoseNet(
        net, functools.partial(torch.optim.Adam, lr=1e-3), student_lr_scale=scale
    )
    optimizer = module.configure_optimizers()["optimizer"]
    seen = [id(p) for group in optimizer.param_groups for p in group["params"]]
    assert sorted(seen) == sorted(id(p) for p in module.parameters())
    student = {id(p) for p in net.student.parameters()}
    for group in optimizer.param_groups:
        ids = {id(p) for p in group["params"]}
        expected = 1e-3 * scale if ids <= student else 1e-3
        assert group["lr"] == pytest.approx(expected), (ids <= student, group["lr"])
