"""The training and evaluation tasks behind ``train.py`` / ``eval.py`` and the console scripts.

``train(cfg)`` and ``evaluate(cfg)`` take a composed config and are what tests call in-process;
``train_main`` / ``eval_main`` wrap them in ``@hydra.main`` for the command line.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from occaist.schemas import register_schemas
from occaist.utils.logging import RankedLogger

log = RankedLogger(__name__)

#: A sweep objective that came out NaN/inf is replaced by this (Optuna 2.x crashes on NaN).
NON_FINITE_OBJECTIVE = 1.0e6


def _start(cfg: DictConfig) -> None:
    """Common start-up: warnings, float32 matmul precision, printing and saving the config."""
    import torch

    if cfg.extras.get("ignore_warnings"):
        warnings.filterwarnings("ignore")
    if cfg.extras.get("num_threads"):
        torch.set_num_threads(int(cfg.extras.num_threads))
    if cfg.extras.get("matmul_precision"):
        torch.set_float32_matmul_precision(cfg.extras.matmul_precision)
    if cfg.extras.get("print_config"):
        from hydra.core.hydra_config import HydraConfig

        from occaist.utils.config import print_config_tree

        out = HydraConfig.get().runtime.output_dir if HydraConfig.initialized() else None
        print_config_tree(cfg, save_to=out)


def _build(cfg: DictConfig) -> dict[str, Any]:
    """Seed, then instantiate data module, model, callbacks, loggers and trainer from ``cfg``."""
    import pytorch_lightning as pl

    from occaist.utils.config import instantiate_collection

    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=bool(cfg.extras.get("seed_workers", True)))
    log.info("instantiating datamodule <%s>", cfg.data._target_)
    datamodule = hydra.utils.instantiate(cfg.data)
    log.info("instantiating model <%s>", cfg.model._target_)
    model = hydra.utils.instantiate(cfg.model)
    callbacks = instantiate_collection(cfg.get("callbacks"), "callback")
    loggers = instantiate_collection(cfg.get("logger"), "logger")
    _prepare_spawn(cfg)
    log.info("instantiating trainer <%s>", cfg.trainer._target_)
    trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    return {
        "cfg": cfg,
        "datamodule": datamodule,
        "model": model,
        "callbacks": callbacks,
        "logger": loggers,
        "trainer": trainer,
    }


def _prepare_spawn(cfg: DictConfig) -> None:
    """Before ``ddp_spawn`` pickles the module to its workers, share tensors through files.

    The default ``file_descriptor`` strategy passes one descriptor per tensor storage to every
    spawned process; with hundreds of storages (the CycleGAN's four networks plus ResNet-18)
    the spawn fails with ``bad value(s) in fds_to_keep``. ``file_system`` has no such limit.
    """
    if "spawn" in str(cfg.trainer.get("strategy", "")):
        import torch.multiprocessing

        torch.multiprocessing.set_sharing_strategy("file_system")


def log_hyperparameters(objects: dict[str, Any]) -> None:
    """Send the resolved config and parameter counts to every logger (rank 0 only)."""
    trainer = objects["trainer"]
    if not trainer.loggers:
        return
    cfg = OmegaConf.to_container(objects["cfg"], resolve=True)
    model = objects["model"]
    hparams = {
        key: cfg.get(key)
        for key in (
            "model",
            "data",
            "trainer",
            "callbacks",
            "extras",
            "task_name",
            "tags",
            "ckpt_path",
            "seed",
        )
    }
    hparams["model/params/total"] = sum(p.numel() for p in model.parameters())
    hparams["model/params/trainable"] = sum(
        p.numel() for p in model.parameters() if p.requires_grad
    )
    for lg in trainer.loggers:
        lg.log_hyperparams(hparams)


def _finish_wandb() -> None:
    """Close the W&B run so the next multirun job starts its own (wandb otherwise reuses it)."""
    try:
        import wandb
    except ImportError:
        return
    if wandb.run is not None:
        wandb.finish()


def _metrics(trainer: Any) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in trainer.callback_metrics.items()
        if getattr(v, "numel", lambda: 1)() == 1
    }


def train(cfg: DictConfig) -> tuple[dict[str, float], dict[str, Any]]:
    """Fit the model described by ``cfg``, test it with the best checkpoint, return metrics.

    Resumes from ``cfg.ckpt_path`` when set (optimizer, scheduler and module state restored).
    """
    _start(cfg)
    objects = _build(cfg)
    trainer, model, datamodule = objects["trainer"], objects["model"], objects["datamodule"]
    try:
        log_hyperparameters(objects)
        if cfg.get("train", True):
            log.info("starting training")
            trainer.fit(model=model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
        train_metrics = _metrics(trainer)
        test_metrics: dict[str, float] = {}
        if cfg.get("test", False):
            ckpt = _best_checkpoint(trainer)
            log.info("testing with checkpoint %s", ckpt or "<current weights>")
            trainer.test(model=model, datamodule=datamodule, ckpt_path=ckpt, weights_only=False)
            test_metrics = _metrics(trainer)
    finally:
        out = getattr(trainer, "log_dir", None) or cfg.paths.get("output_dir")
        log.info("output dir: %s", out)
        _finish_wandb()
    return {**train_metrics, **test_metrics}, objects


def _best_checkpoint(trainer: Any) -> str | None:
    cb = trainer.checkpoint_callback
    if cb is None or trainer.fast_dev_run:
        return None
    best = cb.best_model_path or cb.last_model_path
    return best if best and Path(best).is_file() else None


def evaluate(cfg: DictConfig) -> tuple[dict[str, float], dict[str, Any]]:
    """Test the checkpoint ``cfg.ckpt_path`` on the configured data; return the test metrics."""
    if not cfg.get("ckpt_path") or not Path(cfg.ckpt_path).is_file():
        raise FileNotFoundError(
            f"ckpt_path={cfg.get('ckpt_path')!r} is not a file; pass the checkpoint to evaluate, "
            "e.g. ckpt_path=logs/train/runs/<date>/checkpoints/last.ckpt"
        )
    _start(cfg)
    objects = _build(cfg)
    try:
        log_hyperparameters(objects)
        objects["trainer"].test(
            model=objects["model"],
            datamodule=objects["datamodule"],
            ckpt_path=cfg.ckpt_path,
            weights_only=False,
        )
    finally:
        _finish_wandb()
    return _metrics(objects["trainer"]), objects


def objective_value(metrics: dict[str, float], name: str | None) -> float | None:
    """The value a sweeper optimises; a NaN/inf becomes a large finite penalty, not a crash."""
    if not name:
        return None
    if name not in metrics:
        raise KeyError(f"optimized_metric {name!r} was not logged; available: {sorted(metrics)}")
    value = float(metrics[name])
    if not math.isfinite(value):
        log.warning(
            "objective %s=%s is not finite: returning %s", name, value, NON_FINITE_OBJECTIVE
        )
        return NON_FINITE_OBJECTIVE
    return value


register_schemas()


@hydra.main(version_base="1.3", config_path="conf", config_name="train.yaml")
def train_main(cfg: DictConfig) -> float | None:
    """Console script ``occaist-train`` (same as ``python train.py``)."""
    metrics, _ = train(cfg)
    return objective_value(metrics, cfg.get("optimized_metric"))


@hydra.main(version_base="1.3", config_path="conf", config_name="eval.yaml")
def eval_main(cfg: DictConfig) -> None:
    """Console script ``occaist-eval`` (same as ``python eval.py``)."""
    evaluate(cfg)
