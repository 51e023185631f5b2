"""The training and evaluation tasks behind ``train.py`` / ``eval.py`` and the pipelines.

``train(cfg)`` and ``evaluate(cfg)`` take a composed config; the entry points (:mod:`occaist.cli`),
the studies (:mod:`occaist.pipelines`) and the tests call them. Every run's checkpoints are plain
(``weights_only=True`` loads) and carry the model's config (:class:`ConfigInCheckpoint`), so
``evaluate`` rebuilds the model a checkpoint was trained as and says when it differs from the
experiment named on the command line.
"""

from __future__ import annotations

import csv
import io
import math
import os
import warnings
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

from occaist.utils.logging import RankedLogger

log = RankedLogger(__name__)

#: A sweep objective that came out NaN/inf or was never logged is replaced by this penalty (sign
#: chosen against the sweep's direction; Optuna 2.x crashes on NaN).
NON_FINITE_OBJECTIVE = 1.0e6


def _start(cfg: DictConfig) -> None:
    """Common start-up: target validation, warnings, threads, matmul precision, the config tree.

    Compose time checks each node against its default target; a node swapped for another
    target is checked here (:func:`occaist.schemas.validate_targets`), before anything is built.
    """
    import torch

    from occaist.schemas import validate_targets

    validate_targets(cfg)
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


def experiment_name() -> str | None:
    """The ``experiment=`` choice of the running Hydra job, if any."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    return HydraConfig.get().runtime.choices.get("experiment")


def _run_config(cfg: DictConfig) -> dict[str, Any]:
    """What a checkpoint keeps of the run's config (see :class:`ConfigInCheckpoint`)."""
    return {
        "model": OmegaConf.to_container(cfg.model, resolve=True),
        "data": OmegaConf.to_container(cfg.data, resolve=True),
        "experiment": experiment_name(),
    }


def _usable_callbacks(cfg: DictConfig, callbacks: list[Any]) -> list[Any]:
    """Drop progress bars when ``trainer.enable_progress_bar=false``; check checkpoint folders.

    Lightning refuses a progress-bar callback with the progress bar disabled, and swallows the
    ``PermissionError`` of a checkpoint folder it cannot write (the run then ends with no
    checkpoint and no error): both are settled here, before any training.
    """
    from pytorch_lightning.callbacks import ModelCheckpoint, ProgressBar

    if cfg.trainer.get("enable_progress_bar") is False:
        dropped = [type(c).__name__ for c in callbacks if isinstance(c, ProgressBar)]
        if dropped:
            log.info("trainer.enable_progress_bar=false: not using %s", ", ".join(dropped))
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    for cb in callbacks:
        if isinstance(cb, ModelCheckpoint) and cb.dirpath:
            check_writable(Path(cb.dirpath), "checkpoint folder (callbacks.model_checkpoint)")
    return callbacks


def check_writable(folder: Path, what: str) -> None:
    """Create ``folder`` if needed and raise a clear ``PermissionError`` if it is not writable."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise PermissionError(f"cannot create the {what} {folder}: {err.strerror}") from err
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(
            f"the {what} {folder} is not writable by this user; choose another run directory "
            "(hydra.run.dir=...) or fix its permissions"
        )


def _build(cfg: DictConfig, model: Any = None) -> dict[str, Any]:
    """Seed, then instantiate data module, model, callbacks, loggers and trainer from ``cfg``."""
    import pytorch_lightning as pl

    from occaist.callbacks.config_in_checkpoint import ConfigInCheckpoint
    from occaist.utils.config import instantiate_collection

    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=bool(cfg.extras.get("seed_workers", True)))
    log.info("instantiating datamodule <%s>", cfg.data._target_)
    datamodule = hydra.utils.instantiate(cfg.data)
    if model is None:
        log.info("instantiating model <%s>", cfg.model._target_)
        model = hydra.utils.instantiate(cfg.model)
    callbacks = instantiate_collection(cfg.get("callbacks"), "callback")
    callbacks = [*_usable_callbacks(cfg, callbacks), ConfigInCheckpoint(_run_config(cfg))]
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
    keys = ("model", "data", "trainer", "callbacks", "extras", "task_name", "tags", "ckpt_path")
    hparams = {key: cfg.get(key) for key in (*keys, "seed")}
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

    Resumes from ``cfg.ckpt_path`` when set (optimizer, scheduler and module state restored;
    the checkpoint is loaded with ``weights_only=True``). ``trainer.max_time`` counts the whole
    run, resumed parts included: Lightning restores the elapsed time from the checkpoint.
    """
    _start(cfg)
    if cfg.get("ckpt_path"):
        from occaist.utils.checkpoint import load_checkpoint

        load_checkpoint(cfg.ckpt_path)  # a clear error before any building if it is unusable
    objects = _build(cfg)
    trainer, model, datamodule = objects["trainer"], objects["model"], objects["datamodule"]
    try:
        log_hyperparameters(objects)
        if cfg.get("train", True):
            log.info("starting training")
            trainer.fit(
                model=model,
                datamodule=datamodule,
                ckpt_path=cfg.get("ckpt_path"),
                weights_only=True,
            )
        train_metrics = _metrics(trainer)
        test_metrics: dict[str, float] = {}
        if cfg.get("test", False):
            ckpt = _best_checkpoint(trainer)
            log.info("testing with checkpoint %s", ckpt or "<current weights>")
            trainer.test(model=model, datamodule=datamodule, ckpt_path=ckpt, weights_only=True)
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


def model_from_checkpoint(cfg: DictConfig, checkpoint: dict[str, Any]) -> Any:
    """Build the model a checkpoint was trained as; say how it differs from ``cfg.model``.

    The checkpoint's stored model config wins over the experiment's (its weights only fit that
    architecture), except for the ``model.*`` keys the command line sets explicitly (evaluation
    settings such as ``model.realign_on_test=true``), which are applied on top. A checkpoint of
    another model class is refused with both names. Data keys listed in
    ``model_coupled_data_keys`` (eval.yaml: ``image_size``) follow the checkpoint too.
    """
    from occaist.utils.checkpoint import CONFIG_KEY, CheckpointError, config_differences

    stored = checkpoint.get(CONFIG_KEY) or {}
    found = stored.get("model")
    expected = OmegaConf.to_container(cfg.model, resolve=True)
    if found is None:
        log.warning(
            "checkpoint %s holds no model config: building the experiment's model", cfg.ckpt_path
        )
        return hydra.utils.instantiate(cfg.model)
    trained_as = stored.get("experiment")
    if found.get("_target_") != expected.get("_target_"):
        raise CheckpointError(
            f"{cfg.ckpt_path} is a {found.get('_target_')} checkpoint"
            + (f" (trained with experiment={trained_as})" if trained_as else "")
            + f", but this command builds a {expected.get('_target_')}: name the matching "
            + (f"experiment (experiment={trained_as})" if trained_as else "experiment")
        )
    differences = config_differences(expected, found)
    if differences:
        log.warning(
            "the checkpoint's model differs from experiment's (using the checkpoint's%s):\n  %s",
            f", trained with experiment={trained_as}" if trained_as else "",
            "\n  ".join(differences),
        )
    rebuilt = OmegaConf.create(found)
    explicit = _command_line_model_keys()
    for key in explicit:
        OmegaConf.update(rebuilt, key, OmegaConf.select(cfg.model, key), force_add=True)
    if explicit:
        log.info("model keys set on the command line, over the checkpoint's: %s", explicit)
    coupled = list(cfg.get("model_coupled_data_keys") or [])
    stored_data = stored.get("data") or {}
    with open_dict(cfg):
        for key in coupled:
            if key in stored_data and key in cfg.data and cfg.data[key] != stored_data[key]:
                log.warning(
                    "data.%s=%s follows the checkpoint (was %s)",
                    key,
                    stored_data[key],
                    cfg.data[key],
                )
                cfg.data[key] = stored_data[key]
        cfg.model = rebuilt
    return hydra.utils.instantiate(cfg.model)


def _command_line_model_keys() -> list[str]:
    """The ``model.<key>`` paths set by this command's overrides (``model.`` prefix removed)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    keys = []
    for override in HydraConfig.get().overrides.task:
        key = override.split("=", 1)[0].lstrip("+")
        if key.startswith("model.") and not override.startswith("~"):
            keys.append(key[len("model.") :])
    return keys


def evaluate(cfg: DictConfig) -> tuple[dict[str, float], dict[str, Any]]:
    """Test the checkpoint ``cfg.ckpt_path`` on the configured data; return the test metrics.

    The model is rebuilt from the config stored in the checkpoint (see
    :func:`model_from_checkpoint`); the data are the command's.
    """
    from occaist.utils.checkpoint import load_checkpoint

    if not cfg.get("ckpt_path"):
        raise FileNotFoundError(
            "ckpt_path is not set; pass the checkpoint to evaluate, "
            "e.g. ckpt_path=logs/train/runs/<date>/checkpoints/last.ckpt"
        )
    checkpoint = load_checkpoint(cfg.ckpt_path)
    _start(cfg)
    model = model_from_checkpoint(cfg, checkpoint)
    del checkpoint
    objects = _build(cfg, model=model)
    try:
        log_hyperparameters(objects)
        objects["trainer"].test(
            model=objects["model"],
            datamodule=objects["datamodule"],
            ckpt_path=cfg.ckpt_path,
            weights_only=True,
        )
    finally:
        _finish_wandb()
    return _metrics(objects["trainer"]), objects


def objective_value(
    metrics: dict[str, float], name: str | None, direction: str = "minimize"
) -> float | None:
    """The value a sweeper optimises.

    A NaN/inf, or a metric the run never logged (a trial that ended before its first
    validation), becomes a finite penalty on the wrong side of ``direction`` with a warning,
    so that one bad trial does not abort the sweep.
    """
    if not name:
        return None
    penalty = -NON_FINITE_OBJECTIVE if direction == "maximize" else NON_FINITE_OBJECTIVE
    if name not in metrics:
        log.warning(
            "optimized_metric %r was not logged (available: %s): returning %s",
            name,
            sorted(metrics),
            penalty,
        )
        return penalty
    value = float(metrics[name])
    if not math.isfinite(value):
        log.warning("objective %s=%s is not finite: returning %s", name, value, penalty)
        return penalty
    return value


def record_objective(name: str, value: float, overrides: list[str], sweep_dir: Path) -> None:
    """Print a trial's objective and append it to ``<sweep dir>/objectives.csv``.

    One short ``O_APPEND`` write per trial, so parallel jobs of a launcher do not mix lines.
    """
    log.info("objective %s = %.6g  (%s)", name, value, " ".join(overrides))
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow([name, repr(value), " ".join(overrides)])
    path = sweep_dir / "objectives.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists()
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(("metric,value,overrides\n" if new else "") + buffer.getvalue())
