"""End to end: occnet_synthetic and occnet_graph run (fast_dev_run) from the composed configs,
the test epoch writes the three-predictor table, and a graph checkpoint loads into the full
model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import occaist.cli
from tests.helpers import composed

SMALL = [
    "data.num_workers=0",
    "~logger",
    "callbacks=none",
    "trainer=cpu",
]


@pytest.fixture(scope="module")
def world(tiny_world: Path) -> Path:
    return tiny_world


def _check_report(out: Path, predictors: tuple[str, ...]) -> None:
    """The evaluation callback's files: the model's rows beside the baselines, COCO AP, the
    noise study, the per-occlusion-count figures."""
    out = out / "eval"
    table = (out / "occnet_eval.md").read_text()
    for label in (*predictors, "least-squares shape fit"):
        assert label in table
    rows = json.loads((out / "occnet_eval.json").read_text())
    assert [r["method"] for r in rows] == [
        predictors[0],
        "least-squares shape fit",
        *predictors[1:],
    ]
    assert all(0 <= r["coco_AP"] <= 100 and 0 <= r["all"] <= 100 for r in rows)
    noise = json.loads((out / "occnet_noise.json").read_text())
    assert [r["sigma"] for r in noise] == [0.0, 0.025, 0.05, 0.1]
    assert (out / "pck_curves.png").is_file() and (out / "occnet_samples.csv").is_file()
    assert list(out.glob("pck_curves_occ*.png"))  # one per occlusion count present


@pytest.mark.slow
def test_occnet_synthetic_fast_dev_run_writes_table(world: Path, tmp_path: Path) -> None:
    overrides = [
        "experiment=occnet_synthetic",
        f"data.root={world / 'carfusion'}",
        "trainer.fast_dev_run=true",
        "model.net.min_size=128",
        "model.net.max_size=160",
        "model.net.graph_head.encoder_hidden=32",
        "model.net.graph_head.decoder_hidden=32",
        "model.net.graph_head.hidden_3d=32",
        "model.net.box_batch_size_per_image=32",
        *SMALL,
    ]
    overrides[overrides.index("callbacks=none")] = "callbacks=evaluation"
    with composed(overrides, output_dir=tmp_path) as cfg:
        assert cfg.model.net.occluded_loss == "trifocal" and cfg.model.net.weights is None
        metrics, _ = occaist.cli.train(cfg)
    assert torch.isfinite(torch.tensor(metrics["train/loss"]))
    assert metrics["train/loss_occluded"] > 0  # the trifocal residual of real multi-view matches
    assert "test/pck_all_kgnn2d" in metrics
    _check_report(tmp_path, ("heatmap (Keypoint R-CNN)", "2D-KGNN", "3D-KGNN"))


@pytest.mark.slow
def test_occnet_graph_trains_and_loads_into_full_model(world: Path, tmp_path: Path) -> None:
    graph = [f"model.graph_head.{k}=32" for k in ("encoder_hidden", "decoder_hidden", "hidden_3d")]
    overrides = [
        "experiment=occnet_graph",
        f"data.root={world / 'carfusion'}",
        "trainer.max_epochs=2",
        "data.batch_size=4",
        "callbacks.model_checkpoint.save_last=true",
        *graph,
        *SMALL,
    ]
    overrides[overrides.index("callbacks=none")] = "callbacks=[model_checkpoint,evaluation]"
    with composed(overrides, output_dir=tmp_path) as cfg:
        metrics, objects = occaist.cli.train(cfg)
    assert "test/pck_occluded_kgnn2d" in metrics and "test/visibility_accuracy" in metrics
    _check_report(tmp_path, ("heatmap input", "2D-KGNN", "3D-KGNN"))
    ckpt = objects["trainer"].checkpoint_callback.last_model_path
    full = [
        "experiment=occnet_synthetic",
        f"data.root={world / 'carfusion'}",
        f"model.graph_head_checkpoint={ckpt}",
        "model.net.min_size=128",
        *[g.replace("model.", "model.net.") for g in graph],
    ]
    with composed(full) as cfg:
        import hydra

        model = hydra.utils.instantiate(cfg.model)
    trained = objects["model"].graph_head.state_dict()
    loaded = model.graph_head.state_dict()
    assert all(torch.equal(trained[k], loaded[k]) for k in trained)


def test_validation_panel_only_for_image_loggers(world: Path) -> None:
    from unittest import mock

    import hydra
    from pytorch_lightning.loggers import TensorBoardLogger

    from occaist.data.carfusion import collate_detection

    overrides = [
        "experiment=occnet_synthetic",
        f"data.root={world / 'carfusion'}",
        "model.net.min_size=96",
        "model.net.max_size=160",
        "data.num_workers=0",
    ]
    with composed(overrides) as cfg:
        model = hydra.utils.instantiate(cfg.model).eval()
        dm = hydra.utils.instantiate(cfg.data)
    dm.setup("validate")
    batch = collate_detection([dm.datasets["val"][0]])
    from occaist.callbacks import image_panels

    image_panels.log_keypoint_panels(model, batch)  # no trainer, no logger: nothing, no error
    lg = mock.MagicMock(spec=TensorBoardLogger)
    with mock.patch.object(image_panels, "image_logger", lambda module: lg):
        image_panels.log_keypoint_panels(model, batch)
    grid = lg.experiment.add_image.call_args[0][1]
    height, width = batch[0][0].shape[-2:]
    assert grid.shape == (3, height + 4, 3 * width + 8)


@pytest.mark.slow
def test_heatmap_graph_recipe_runs_as_documented(world: Path, tmp_path: Path, repo_root) -> None:
    """The two commands of ``experiment=occnet_graph_heatmaps`` on the tiny world: the heatmap
    script with ``--folds 0`` writes test graphs only; the KGNNs train on the stand-in (gross
    errors, blurred confidence, the fit prior) and are evaluated on the network's graphs."""
    import subprocess
    import sys

    graphs = tmp_path / "heatmap_graphs.pt"
    cmd = [
        sys.executable, str(repo_root / "scripts" / "occnet_heatmaps.py"),
        "--root", str(world / "carfusion"), "--out", str(graphs), "--folds", "0",
        "--epochs", "1", "--width", "8",
    ]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    written = torch.load(graphs, weights_only=True)
    assert set(written) == {"test"} and written["test"]["nodes"].shape[1:] == (14, 3)
    overrides = [
        "experiment=occnet_graph_heatmaps",
        f"data.root={world / 'carfusion'}",
        f"data.heatmap_graphs={graphs}",
        "trainer.max_epochs=2",
        *SMALL,
    ]
    overrides[overrides.index("callbacks=none")] = "callbacks=evaluation"
    with composed(overrides, output_dir=tmp_path / "run") as cfg:
        assert cfg.model.outlier_prob > 0 and cfg.model.graph_head.fit_prior
        metrics, _ = occaist.cli.train(cfg)
    assert "test/pck_occluded_kgnn2d" in metrics
    # the fitted camera adds its diagnostic row: the same fit without the learned weights
    _check_report(
        tmp_path / "run",
        ("heatmap input", "2D-KGNN", "3D-KGNN", "3D-KGNN, learned weights off"),
    )
