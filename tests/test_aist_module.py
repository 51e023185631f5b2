"""AISTCycleGAN: one training step, exact resume, LR policies, experiments end to end."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch

from occaist.data.unpaired import UnpairedDataModule
from occaist.models.aist.module import AISTCycleGAN, LinearDecay, mask_iou
from occaist.models.aist.networks import PatchDiscriminator, ResnetGenerator
from tests.test_unpaired import write_unpaired_tree

TINY = {
    "generator": functools.partial(ResnetGenerator, base_channels=4, num_blocks=1),
    "discriminator": functools.partial(PatchDiscriminator, base_channels=4),
    "res_weights": None,
}
TINY_OVERRIDES = [
    "model.generator.base_channels=4",
    "model.generator.num_blocks=1",
    "model.discriminator.base_channels=4",
    "model.res_weights=null",
    "data.image_size=32",
    "data.num_workers=0",
]


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> tuple[Path, Path]:
    return write_unpaired_tree(tmp_path_factory.mktemp("unpaired"))


def _datamodule(tree, **kwargs) -> UnpairedDataModule:
    renders, prepared = tree
    return UnpairedDataModule(
        str(renders), str(prepared), image_size=32, batch_size=2, num_workers=0, **kwargs
    )


def _trainer(
    epochs: int, batches: int = 2, val_batches: int = 0, logger: Any = False
) -> pl.Trainer:
    return pl.Trainer(
        max_epochs=epochs,
        limit_train_batches=batches,
        limit_val_batches=val_batches,
        logger=logger,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        num_sanity_val_steps=0,
    )


def test_training_step_updates_generators_and_discriminators(tree):
    torch.manual_seed(0)
    model = AISTCycleGAN(**TINY)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = _trainer(1, batches=1)
    trainer.fit(model, _datamodule(tree))
    for net in ("G", "F", "D_X", "D_Y"):
        key = f"{net}.model.0.weight" if net.startswith("D") else f"{net}.model.1.weight"
        assert not torch.equal(model.state_dict()[key], before[key]), net
    names = set(trainer.callback_metrics)
    for term in (
        "gan_G",
        "gan_F",
        "cycle_A",
        "cycle_B",
        "idt_G",
        "idt_F",
        "alpha_G",
        "alpha_F",
        "res_G",
        "res_F",
        "D_X",
        "D_Y",
    ):
        assert f"train/loss_{term}" in names, term
    assert len(model.pool_fake_x) == len(model.pool_fake_y) == 2


def test_zero_weights_drop_terms_and_phi():
    model = AISTCycleGAN(**{**TINY, "lambda_res_G": 0.0, "lambda_res_F": 0.0, "lambda_idt": 0.0})
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    terms = model.generator_losses(x, x, x, x, x, x)
    assert set(terms) == {"gan_G", "gan_F", "cycle_A", "cycle_B", "alpha_G", "alpha_F"}
    assert not any(k.startswith("feature") for k in model.state_dict())


def test_exact_resume_matches_straight_run(tree, tmp_path):
    """N steps straight == N/2 + checkpoint + resume + N/2, bit for bit (pools, Adam, LR)."""
    settings = {**TINY, "pool_size": 3, "lr_policy": "linear", "n_epochs": 1, "n_epochs_decay": 2}

    pl.seed_everything(0)
    straight = AISTCycleGAN(**settings)
    _trainer(2).fit(straight, _datamodule(tree))

    pl.seed_everything(0)
    first = AISTCycleGAN(**settings)
    trainer = _trainer(1)
    trainer.fit(first, _datamodule(tree))
    ckpt = tmp_path / "half.ckpt"
    trainer.save_checkpoint(ckpt)
    saved = torch.load(ckpt, weights_only=True)  # plain hparams: the safe loader suffices
    assert set(saved["image_pools"]) == {"fake_x", "fake_y"}
    assert len(saved["optimizer_states"]) == 2 and len(saved["lr_schedulers"]) == 2

    pl.seed_everything(0)
    resumed = AISTCycleGAN(**settings)
    _trainer(2).fit(resumed, _datamodule(tree), ckpt_path=ckpt)

    expected = straight.state_dict()
    for key, value in resumed.state_dict().items():
        assert torch.equal(value, expected[key]), key
    for a, b in zip(straight.pool_fake_y.images, resumed.pool_fake_y.images):
        assert torch.equal(a, b)
    lrs = [g["lr"] for opt in resumed.trainer.optimizers for g in opt.param_groups]
    assert lrs == pytest.approx([2e-4 * LinearDecay(1, 2)(2)] * 2)


def test_lr_policies():
    decay = LinearDecay(n_epochs=100, n_epochs_decay=100)
    assert decay(0) == decay(99) == 1.0  # the first n_epochs epochs at the full rate
    assert decay(100) == pytest.approx(1 - 1 / 101)
    assert decay(199) == pytest.approx(1 / 101)  # last epoch: never a zero rate
    model = AISTCycleGAN(**TINY)
    _, schedulers = model.configure_optimizers()
    for _ in range(5):
        schedulers[0].step()
    assert schedulers[0].get_last_lr() == [2e-4]  # constant (thesis)


def test_stylize_is_g_without_grad():
    torch.manual_seed(0)
    model = AISTCycleGAN(**TINY)
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    out = model.stylize(x)
    assert not out.requires_grad and model.G.training
    model.G.eval()
    assert torch.equal(out, model.G(x).detach())


def test_mask_iou():
    a = torch.zeros(2, 1, 2, 2, dtype=torch.bool)
    b = a.clone()
    a[0, 0, 0, :] = True
    b[0, 0, :, 0] = True
    assert mask_iou(a, b).tolist() == [pytest.approx(1 / 3), 1.0]


def test_channel_mode_builds_rgba_networks(tree):
    model = AISTCycleGAN(**{**TINY, "alpha_mode": "channel"})
    assert model.G.in_channels == 4 and model.G.out_channels == 4
    _trainer(1, batches=1).fit(model, _datamodule(tree, channels=4))
    with pytest.raises(ValueError, match="alpha_mode"):
        AISTCycleGAN(**{**TINY, "alpha_mode": "soft"})
    rgb = {"A": torch.zeros(1, 3, 32, 32), "B": torch.zeros(1, 3, 32, 32)}
    with pytest.raises(ValueError, match=r"data\.channels=4"):
        model.validation_step(rgb, 0)


@pytest.mark.slow
@pytest.mark.parametrize("experiment", ["aist_constrained", "aist_less_constrained"])
def test_experiment_fast_dev_run(experiment, tree, tmp_path):
    import occaist.cli
    from tests.helpers import composed

    renders, prepared = tree
    overrides = [
        f"experiment={experiment}",
        f"data.renders_root={renders}",
        f"data.prepared_root={prepared}",
        "trainer.fast_dev_run=true",
        "logger=csv",
        *TINY_OVERRIDES,
    ]
    with composed(overrides, output_dir=tmp_path) as cfg:
        table = {"aist_constrained": (2.0, 1.75), "aist_less_constrained": (1.0, 1.25)}
        alpha, res = table[experiment]
        assert (cfg.model.lambda_A, cfg.model.lambda_B, cfg.model.lambda_idt) == (10, 10, 0.1)
        assert cfg.model.lambda_alpha_G == cfg.model.lambda_alpha_F == alpha
        assert cfg.model.lambda_res_G == cfg.model.lambda_res_F == res
        metrics, _ = occaist.cli.train(cfg)
    assert {"train/loss_G", "train/loss_D", "test/mask_iou", "test/cycle_error_A"} <= set(metrics)


def test_first_command_without_data_names_path_and_fix(tmp_path):
    import occaist.cli
    from tests.helpers import composed

    overrides = [
        "experiment=aist_constrained",
        f"paths.data_dir={tmp_path}",
        "logger=csv",
        *TINY_OVERRIDES,
    ]
    with (
        composed(overrides, output_dir=tmp_path / "out") as cfg,
        pytest.raises(
            FileNotFoundError, match=r"(?s)world/shapenet_renders.*python -m occaist\.synth"
        ),
    ):
        occaist.cli.train(cfg)


def test_fid_and_kid_with_local_feature_weights(tree, tmp_path):
    """FID/KID (ResNet-18 features) are logged when the weights file exists, skipped if not."""
    from torchvision.models import resnet18

    weights = tmp_path / "resnet18.pth"
    torch.save(resnet18(weights=None).state_dict(), weights)
    model = AISTCycleGAN(**TINY, fid_weights=str(weights), kid_subset_size=2)
    trainer = _trainer(1, batches=1, val_batches=1, logger=False)
    trainer.fit(model, _datamodule(tree))
    metrics = trainer.callback_metrics
    assert {"val/fid_resnet18", "val/kid_resnet18", "val/mask_iou"} <= set(metrics)
    assert torch.isfinite(metrics["val/fid_resnet18"])
    assert not any("fid" in k or "features" in k for k in model.state_dict())
    missing = AISTCycleGAN(**TINY, fid_weights=str(tmp_path / "absent.pth"))
    assert missing._fid == {}


def test_ddp_gets_find_unused_parameters():
    """Each backward leaves one optimiser's networks without gradients; DDP must allow it.
    (Checked end to end with trainer=ddp_cpu trainer.strategy=ddp, two gloo processes.)"""
    trainer = pl.Trainer(strategy="ddp", accelerator="cpu", devices=1, logger=False)
    model = AISTCycleGAN(**TINY)
    model.trainer = trainer
    model.setup("fit")
    assert trainer.strategy._ddp_kwargs["find_unused_parameters"] is True


def test_image_panels_reach_tensorboard(tree, tmp_path):
    from pytorch_lightning.loggers import TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = TensorBoardLogger(str(tmp_path), name="tb")
    model = AISTCycleGAN(**TINY, image_log_every_n_steps=1)
    trainer = _trainer(1, batches=1, val_batches=1, logger=logger)
    trainer.fit(model, _datamodule(tree))
    events = EventAccumulator(logger.log_dir)
    events.Reload()
    tags = events.Tags()["images"]
    assert {"train/panel", "val/panel"} <= set(tags)
    panel = events.Images("train/panel")[0]
    assert panel.width == 5 * 32 + 6 * 2 and panel.height == 2 * 32 + 3 * 2  # 5 x 2 tiles


@pytest.mark.slow
def test_ddp_cpu_two_processes(tree, tmp_path):
    """Two gloo processes (trainer=ddp_cpu): DistributedSampler injected, both halves step."""
    import occaist.cli
    from tests.helpers import composed

    renders, prepared = tree
    overrides = [
        "experiment=aist_constrained",
        f"data.renders_root={renders}",
        f"data.prepared_root={prepared}",
        "trainer=ddp_cpu",
        "trainer.max_epochs=1",
        "+trainer.limit_train_batches=2",
        "+trainer.limit_val_batches=1",
        "trainer.precision=32-true",
        "test=false",
        "logger=csv",
        "data.batch_size=1",
        *TINY_OVERRIDES,
    ]
    with composed(overrides, output_dir=tmp_path) as cfg:
        metrics, objects = occaist.cli.train(cfg)
    assert objects["trainer"].world_size == 2
    assert {"train/loss_G", "train/loss_D", "val/mask_iou"} <= set(metrics)


def test_shorthand_weights_set_both_generators() -> None:
    model = AISTCycleGAN(
        lambda_alpha=3.0,
        lambda_res=0.5,
        generator=TINY["generator"],
        discriminator=TINY["discriminator"],
        res_weights=None,
    )
    hp = model.hparams
    assert (hp.lambda_alpha_G, hp.lambda_alpha_F) == (3.0, 3.0)
    assert (hp.lambda_res_G, hp.lambda_res_F) == (0.5, 0.5)
    plain = AISTCycleGAN(
        lambda_alpha_G=1.0,
        lambda_alpha_F=2.0,
        generator=TINY["generator"],
        discriminator=TINY["discriminator"],
        res_weights=None,
    )
    assert (plain.hparams.lambda_alpha_G, plain.hparams.lambda_alpha_F) == (1.0, 2.0)


def test_stylisation_measured_at_validation_and_when_no_validation_ran(tree) -> None:
    """The sweep objective exists whether or not a validation ran; it is in [0, 1]."""
    measured = {"measure_images": 8, "measure_epochs": 2}
    model = AISTCycleGAN(**TINY, **measured)
    trainer = _trainer(1, batches=1, val_batches=2)
    trainer.fit(model, _datamodule(tree))
    keys = ("two_sample_auc", "colour_correlation", "alpha_iou", "stylisation_score")
    assert {f"val/{k}" for k in keys} <= set(trainer.callback_metrics)

    model = AISTCycleGAN(**TINY, **measured)
    trainer = _trainer(1, batches=1, val_batches=0)  # no validation at all
    trainer.fit(model, _datamodule(tree))
    score = float(trainer.callback_metrics["val/stylisation_score"])
    assert 0.0 <= score <= 1.0
