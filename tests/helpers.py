"""Helpers for composing configs in-process, as users' runs do, without a subprocess."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from occaist.schemas import register_schemas


@contextmanager
def composed(
    overrides: Sequence[str] = (),
    config_name: str = "train.yaml",
    output_dir: Path | None = None,
) -> Iterator[DictConfig]:
    """Compose ``config_name`` with ``overrides`` as ``train.py`` would, ready for ``train(cfg)``.

    With ``output_dir`` the run writes there (paths, trainer root), loggers and printing are off
    unless the overrides ask for them, and HydraConfig is set so ``${hydra:...}`` resolves.
    """
    register_schemas()
    GlobalHydra.instance().clear()
    with initialize_config_module("occaist.conf", version_base="1.3"):
        cfg = compose(config_name, overrides=list(overrides), return_hydra_config=True)
        if output_dir is not None:
            with open_dict(cfg):
                cfg.paths.output_dir = str(output_dir)
                cfg.paths.log_dir = str(output_dir)
                cfg.hydra.runtime.output_dir = str(output_dir)
                cfg.hydra.job.num = 0
                cfg.hydra.job.id = "0"
                cfg.extras.print_config = False
            HydraConfig().set_config(cfg)
        yield cfg
    GlobalHydra.instance().clear()
