"""``AISTCycleGAN``: the annotation-invariant style-transfer CycleGAN (thesis chapter 4, 6.1).

Two ResNet generators, G: X (synthetic renders) -> Y (real segments) and F: Y -> X, and two
70x70 PatchGAN discriminators D_Y, D_X, trained with manual optimisation in upstream's order:

1. generator step with both discriminators frozen (``toggle_optimizer``):
   ``L_G = V_LSGAN_G + V_LSGAN_F + V_CYCLE_fwd + V_CYCLE_bwd + V_Idt_G + V_Idt_F
   + V_Alpha_G + V_Alpha_F + V_ResDist_G + V_ResDist_F``;
2. discriminator step on real images and pooled (history of 50) generated images, each
   discriminator's LSGAN loss halved.

Deviations from upstream/thesis, each a switch: ``alpha_mode`` (``proxy_soft`` default,
``proxy_hard`` thesis as written, ``channel`` true RGBA; see :mod:`.losses`), ``lr_policy``
(``constant`` thesis, ``linear`` upstream's decay), ``model.generator.activation``
(``leaky_relu`` 0.01 thesis, ``relu`` upstream).

Unlike upstream, a checkpoint holds both optimisers, both schedulers and both image pools, so
resuming (``ckpt_path=...``) continues the same run (bit-for-bit on CPU with a fixed seed). The
networks are composed in config (``model.generator`` / ``model.discriminator``, partials of the
network classes); a checkpoint stores them as config dicts (:meth:`on_save_checkpoint`), so it
loads with ``torch.load(weights_only=True)`` and :func:`occaist.stylize.load_generator` rebuilds
G from the checkpoint alone.

Generator switches for short budgets (``model.generator.output=residual`` starts G and F as the
identity, ``model.generator.upsampling=resize_conv`` avoids the checkerboard,
``model.generator.keep_background`` keeps the silhouette exactly, ``model.generator.input_skip``
lets the change depend on the pixel's colour, which instance norm hides from the trunk; see
:mod:`.networks` and docs/aist.md). Validation logs the stylisation measures of
:mod:`occaist.evaluation.stylisation` (two-sample AUC against the real segments, colour
correlation, alpha IoU and their ``stylisation_score``, the sweeps' objective); a run that ends
before its first validation measures once at the end of training, so the objective always exists.
The test loop returns per-sample records for the stylisation evaluator; the validation and test
steps live in :mod:`.evaluation_steps` (the module writes no files).

Inference: :meth:`AISTCycleGAN.stylize` (or ``forward``) applies G to images in [-1, 1].
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor, nn
from torchmetrics import MeanMetric

from occaist.evaluation.stylisation import ClassifierBudget, StylisationEvaluator
from occaist.models.aist import evaluation_steps as steps
from occaist.models.aist.image_pool import ImagePool
from occaist.models.aist.losses import (
    ALPHA_MODES,
    PROXY_THRESHOLD,
    FeatureDistance,
    alpha_loss,
    cycle_loss,
    identity_loss,
    lsgan_discriminator_loss,
    lsgan_generator_loss,
)
from occaist.models.aist.metrics import StylisationSamples, build_fid_metrics, mask_iou
from occaist.models.aist.networks import PatchDiscriminator, ResnetGenerator, build_partial
from occaist.models.aist.schedules import LR_POLICIES, ConstantFactor, LinearDecay, lr_factor
from occaist.utils.checkpoint import plain
from occaist.utils.logging import RankedLogger

log = RankedLogger(__name__)

__all__ = ["AISTCycleGAN", "ConstantFactor", "LinearDecay", "mask_iou"]


class AISTCycleGAN(pl.LightningModule):
    """CycleGAN with alpha and ResNet-18 feature-distance losses (thesis eq. in section 6.1).

    Batches are dicts ``{"A": x, "B": y}`` with x, y (B, C, H, W) in [-1, 1], C = 3 or 4
    (4 exactly when ``alpha_mode="channel"``).

    Args:
        lambda_A, lambda_B: cycle weights lambda_A (X -> Y -> X) and lambda_B (Y -> X -> Y).
        lambda_idt: identity weight lambda_idt (times lambda_B for G(y), lambda_A for F(x)).
        lambda_alpha_G, lambda_alpha_F: lambda_Alpha_G, lambda_Alpha_F.
        lambda_res_G, lambda_res_F: lambda_ResDist_G, lambda_ResDist_F.
        lambda_alpha, lambda_res: shorthands for sweeps (``model.lambda_alpha=1,2,4``): when set,
            they replace both the G and the F weight of their term.
        alpha_mode: ``proxy_soft`` | ``proxy_hard`` | ``channel`` (see :mod:`.losses`).
        alpha_temperature: temperature T of ``proxy_soft``.
        res_weights: ResNet-18 ImageNet weights for Phi: ``"default"`` (torchvision's cache),
            a file, or ``None`` (random Phi, tests only). Unused when both lambda_res are 0.
        generator: builds G and F, called as ``generator(in_channels=C, out_channels=C)``: a
            partial of :class:`~occaist.models.aist.networks.ResnetGenerator` (config
            ``_partial_: true``, the architecture's switches as its keywords), or that partial's
            config dict (as stored in a checkpoint). Default: the published ResNet generator.
        discriminator: builds D_Y and D_X as ``discriminator(in_channels=C)``; a partial of
            :class:`~occaist.models.aist.networks.PatchDiscriminator` or its config dict.
        lr, beta1, beta2: Adam settings of both optimisers (2e-4, 0.5, 0.999).
        lr_policy: ``constant`` (thesis) or ``linear`` (upstream; see :class:`LinearDecay`).
        n_epochs, n_epochs_decay: the ``linear`` policy's epochs at full rate and of decay.
        pool_size, pool_seed: image-pool capacity (50) and the seed of its random draws.
        channels_last: run the networks in channels-last memory format (faster on some CPUs/GPUs).
        image_log_every_n_steps: image panels every N training batches (W&B / TensorBoard only).
        fid_weights: ResNet-18 weights for FID/KID on validation/test (``None``: off). The
            metrics are skipped with a warning when the file is missing. They use ResNet-18
            pooled features, so they are not comparable with published (Inception) FID.
        kid_subset_size: KID subset size (KID is skipped when fewer fake images were seen).
        measure_images: validation images (of each domain, distinct) kept for the stylisation
            measures (0: off); the two-sample AUC needs at least 4 real ones.
        measure_epochs: epochs of the two-sample classifier (its fixed budget; see
            :class:`~occaist.evaluation.stylisation.ClassifierBudget`).
    """

    def __init__(
        self,
        lambda_A: float = 10.0,
        lambda_B: float = 10.0,
        lambda_idt: float = 0.1,
        lambda_alpha_G: float = 2.0,
        lambda_alpha_F: float = 2.0,
        lambda_res_G: float = 1.75,
        lambda_res_F: float = 1.75,
        lambda_alpha: float | None = None,
        lambda_res: float | None = None,
        alpha_mode: str = "proxy_soft",
        alpha_temperature: float = 0.1,
        res_weights: str | None = "default",
        generator: Callable[..., nn.Module] | Mapping[str, Any] | None = None,
        discriminator: Callable[..., nn.Module] | Mapping[str, Any] | None = None,
        lr: float = 2e-4,
        beta1: float = 0.5,
        beta2: float = 0.999,
        lr_policy: str = "constant",
        n_epochs: int = 100,
        n_epochs_decay: int = 100,
        pool_size: int = 50,
        pool_seed: int = 0,
        channels_last: bool = False,
        image_log_every_n_steps: int = 500,
        fid_weights: str | None = None,
        kid_subset_size: int = 50,
        measure_images: int = 64,
        measure_epochs: int = 60,
    ) -> None:
        super().__init__()
        if alpha_mode not in ALPHA_MODES:
            raise ValueError(f"alpha_mode must be one of {ALPHA_MODES}, got {alpha_mode!r}")
        if lr_policy not in LR_POLICIES:
            raise ValueError(f"lr_policy must be one of {LR_POLICIES}, got {lr_policy!r}")
        if lambda_alpha is not None:
            lambda_alpha_G = lambda_alpha_F = lambda_alpha
        if lambda_res is not None:
            lambda_res_G = lambda_res_F = lambda_res
        self.save_hyperparameters(logger=False)
        # the effective per-generator weights are what the losses read
        self.hparams.update(
            lambda_alpha_G=lambda_alpha_G,
            lambda_alpha_F=lambda_alpha_F,
            lambda_res_G=lambda_res_G,
            lambda_res_F=lambda_res_F,
        )
        self.automatic_optimization = False
        channels = 4 if alpha_mode == "channel" else 3  # RGBA networks only for true alpha

        make_g, make_d = (
            build_partial(generator, ResnetGenerator),
            build_partial(discriminator, PatchDiscriminator),
        )
        self.G = make_g(in_channels=channels, out_channels=channels)  # X (synthetic) -> Y (real)
        self.F = make_g(in_channels=channels, out_channels=channels)  # Y (real) -> X (synthetic)
        self.D_Y = make_d(in_channels=channels)  # real vs G(x)
        self.D_X = make_d(in_channels=channels)  # synthetic vs F(y)
        self.pool_fake_y = ImagePool(pool_size, seed=pool_seed)
        self.pool_fake_x = ImagePool(pool_size, seed=pool_seed + 1)
        # Frozen feature networks are kept out of the state dict (checkpoints hold only what is
        # trained); ``_apply`` moves them with the module.
        self._frozen: dict[str, nn.Module] = {}
        if lambda_res_G > 0 or lambda_res_F > 0:
            self._frozen["feature_distance"] = FeatureDistance(res_weights)
        self._fid: dict[str, Any] = build_fid_metrics(fid_weights, kid_subset_size)
        self.val_metrics = self._split_metrics()
        self.test_metrics = self._split_metrics()
        self._samples = StylisationSamples(measure_images)
        if channels_last:
            self.to(memory_format=torch.channels_last)

    # ----------------------------------------------------------------------------- set-up
    @staticmethod
    def _split_metrics() -> nn.ModuleDict:
        return nn.ModuleDict(
            {
                "mask_iou": MeanMetric(),
                "cycle_error_A": MeanMetric(),
                "cycle_error_B": MeanMetric(),
            }
        )

    def _apply(self, fn: Any, recurse: bool = True) -> AISTCycleGAN:
        super()._apply(fn, recurse)
        for module in self._frozen.values():
            module._apply(fn, recurse)
        for metrics in self._fid.values():
            for metric in metrics.values():
                metric._apply(fn)
        return self

    def setup(self, stage: str) -> None:
        """Under DDP, enable ``find_unused_parameters``: each of the two backward passes leaves
        the other optimiser's networks without gradients (discriminators frozen in the generator
        step, generators detached in the discriminator step), which plain DDP rejects."""
        from pytorch_lightning.strategies import DDPStrategy

        strategy = self.trainer.strategy
        if isinstance(strategy, DDPStrategy):
            kwargs = strategy._ddp_kwargs  # what the strategy passes to DistributedDataParallel
            if not kwargs.get("find_unused_parameters"):
                log.info("AISTCycleGAN under DDP: setting find_unused_parameters=True")
                kwargs["find_unused_parameters"] = True

    def configure_optimizers(self) -> tuple[list[Any], list[Any]]:
        """Adam over (G, F) and Adam over (D_X, D_Y), each with an epoch-wise LambdaLR."""
        hp = self.hparams
        betas = (hp.beta1, hp.beta2)
        opt_g = torch.optim.Adam([*self.G.parameters(), *self.F.parameters()], hp.lr, betas)
        opt_d = torch.optim.Adam([*self.D_X.parameters(), *self.D_Y.parameters()], hp.lr, betas)
        factor = lr_factor(hp.lr_policy, hp.n_epochs, hp.n_epochs_decay)
        schedulers = [torch.optim.lr_scheduler.LambdaLR(opt, factor) for opt in (opt_g, opt_d)]
        return [opt_g, opt_d], schedulers

    # ----------------------------------------------------------------------------- inference
    def _format(self, x: Tensor) -> Tensor:
        if self.hparams.channels_last:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def _inputs(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """x, y from a batch, checked against the networks' channels (3 RGB, 4 RGBA)."""
        x, y = batch["A"], batch["B"]
        expected = self.G.in_channels
        if x.shape[1] != expected or y.shape[1] != expected:
            raise ValueError(
                f"alpha_mode={self.hparams.alpha_mode!r} needs {expected}-channel images, the "
                f"data gives {x.shape[1]}/{y.shape[1]}: set data.channels={expected}"
            )
        return self._format(x), self._format(y)

    def forward(self, x: Tensor) -> Tensor:
        """G(x): synthetic (B, C, H, W) in [-1, 1] -> stylized "real" images, same shape."""
        return self.G(self._format(x))

    @torch.no_grad()
    def stylize(self, x: Tensor) -> Tensor:
        """G(x) without gradients in eval mode (restores the previous mode)."""
        was_training = self.G.training
        self.G.eval()
        try:
            return self(x).contiguous()
        finally:
            self.G.train(was_training)

    def hard_mask(self, x: Tensor) -> Tensor:
        """Boolean foreground mask (B, 1, H, W) of the image as written to an 8-bit PNG: alpha
        (``channel``) or any RGB channel at least 1/255 above black. (The thesis's proxy, any
        channel > -1, counts tanh's never-exact -1 background as foreground everywhere.)"""
        if self.hparams.alpha_mode == "channel":
            return x[:, 3:4] > PROXY_THRESHOLD
        return x[:, :3].amax(dim=1, keepdim=True) > PROXY_THRESHOLD

    # ----------------------------------------------------------------------------- training
    def generator_losses(
        self, x: Tensor, y: Tensor, fake_y: Tensor, rec_x: Tensor, fake_x: Tensor, rec_y: Tensor
    ) -> dict[str, Tensor]:
        """Every term of L_Generators by name (thesis 4.1.3); losses are computed in float32."""
        hp = self.hparams
        x, y = x.float(), y.float()
        fake_y, rec_x, fake_x, rec_y = (t.float() for t in (fake_y, rec_x, fake_x, rec_y))
        terms = {
            "gan_G": lsgan_generator_loss(self.D_Y(self._format(fake_y)).float()),
            "gan_F": lsgan_generator_loss(self.D_X(self._format(fake_x)).float()),
            "cycle_A": cycle_loss(x, rec_x, hp.lambda_A),
            "cycle_B": cycle_loss(y, rec_y, hp.lambda_B),
            "alpha_G": alpha_loss(
                x, fake_y, hp.lambda_alpha_G, hp.alpha_mode, hp.alpha_temperature
            ),
            "alpha_F": alpha_loss(
                y, fake_x, hp.lambda_alpha_F, hp.alpha_mode, hp.alpha_temperature
            ),
        }
        if hp.lambda_idt > 0:
            terms["idt_G"] = identity_loss(
                y, self.G(self._format(y)).float(), hp.lambda_B, hp.lambda_idt
            )
            terms["idt_F"] = identity_loss(
                x, self.F(self._format(x)).float(), hp.lambda_A, hp.lambda_idt
            )
        distance = self._frozen.get("feature_distance")
        if distance is not None:
            terms["res_G"] = distance(x, fake_y, hp.lambda_res_G).float()
            terms["res_F"] = distance(y, fake_x, hp.lambda_res_F).float()
        return terms

    def discriminator_losses(
        self, x: Tensor, y: Tensor, fake_y: Tensor, fake_x: Tensor
    ) -> dict[str, Tensor]:
        """V_LSGAN_{D_Y} and V_LSGAN_{D_X} on real images and pooled generated ones."""
        pooled_y = self._format(self.pool_fake_y.query(fake_y))
        pooled_x = self._format(self.pool_fake_x.query(fake_x))
        return {
            "D_Y": lsgan_discriminator_loss(self.D_Y(y).float(), self.D_Y(pooled_y).float()),
            "D_X": lsgan_discriminator_loss(self.D_X(x).float(), self.D_X(pooled_x).float()),
        }

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        x, y = self._inputs(batch)
        opt_g, opt_d = self.optimizers()

        self.toggle_optimizer(opt_g)  # D_X, D_Y frozen
        fake_y = self.G(x)  # G(x)
        rec_x = self.F(fake_y)  # F(G(x))
        fake_x = self.F(y)  # F(y)
        rec_y = self.G(fake_x)  # G(F(y))
        g_terms = self.generator_losses(x, y, fake_y, rec_x, fake_x, rec_y)
        loss_g = torch.stack(list(g_terms.values())).sum()
        opt_g.zero_grad()
        self.manual_backward(loss_g)
        opt_g.step()
        self.untoggle_optimizer(opt_g)

        self.toggle_optimizer(opt_d)
        d_terms = self.discriminator_losses(x, y, fake_y, fake_x)
        loss_d = d_terms["D_Y"] + d_terms["D_X"]
        opt_d.zero_grad()
        self.manual_backward(loss_d)
        opt_d.step()
        self.untoggle_optimizer(opt_d)

        logged = {f"train/loss_{name}": value.detach() for name, value in g_terms.items()}
        logged |= {f"train/loss_{name}": value.detach() for name, value in d_terms.items()}
        self.log_dict(
            logged,
            prog_bar=False,
            on_step=True,
            on_epoch=True,
            sync_dist=True,
            batch_size=x.shape[0],
        )
        self.log("train/loss_G", loss_g.detach(), prog_bar=True, batch_size=x.shape[0])
        self.log("train/loss_D", loss_d.detach(), prog_bar=True, batch_size=x.shape[0])
        every = self.hparams.image_log_every_n_steps
        if every > 0 and self.trainer.fit_loop.total_batch_idx % every == 0:
            steps.log_panels(self, "train", x, fake_y, rec_x, y, fake_x, rec_y)

    def on_train_epoch_end(self) -> None:
        for scheduler in self.lr_schedulers():
            scheduler.step()

    # ------------------------------------------------------------ evaluation (.evaluation_steps)
    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        out = steps.evaluate_batch(self, "val", batch, batch_idx)
        if self.hparams.measure_images > 0 and not self.trainer.sanity_checking:
            self._samples.add(batch, out["x"], out["fake_y"], out["y"])

    def on_validation_epoch_end(self) -> None:
        steps.log_fid(self, "val")
        for name, value in steps.measure(self).items():
            self.log(f"val/{name}", value, sync_dist=True)

    def on_train_end(self) -> None:
        steps.measure_if_no_validation_ran(self)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, list[dict]]:
        out = steps.evaluate_batch(self, "test", batch, batch_idx)
        return {"records": steps.test_records(batch, out)}

    def on_test_epoch_end(self) -> None:
        steps.log_fid(self, "test")

    def build_evaluator(self) -> StylisationEvaluator:
        """The test report: domain-gap table (originals as baseline), montage, per-image rows."""
        return StylisationEvaluator(ClassifierBudget(epochs=self.hparams.measure_epochs))

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        return self.stylize(batch["A"])

    # ----------------------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Add both image pools (images and RNG states) to the checkpoint; store the network
        partials as their config dicts (plain values for ``weights_only`` loading)."""
        if "hyper_parameters" in checkpoint:
            checkpoint["hyper_parameters"] = plain(checkpoint["hyper_parameters"])
        checkpoint["image_pools"] = {
            "fake_y": self.pool_fake_y.state_dict(),
            "fake_x": self.pool_fake_x.state_dict(),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore both image pools saved by :meth:`on_save_checkpoint` (when present)."""
        pools = checkpoint.get("image_pools")
        if pools is None:
            log.warning("checkpoint has no image pools: they start empty")
            return
        self.pool_fake_y.load_state_dict(pools["fake_y"], self.device)
        self.pool_fake_x.load_state_dict(pools["fake_x"], self.device)
