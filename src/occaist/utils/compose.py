"""Compose the project's Hydra configs in-process (tests, notebooks, multi-step pipelines)."""

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
    output_dir: str | Path | None = None,
) -> Iterator[DictConfig]:
    """Compose ``config_name`` with ``overrides`` exactly as ``train.py`` would.

    With ``output_dir`` the config is made ready for :func:`occaist.cli.train` /
    :func:`~occaist.cli.evaluate` outside ``@hydra.main``: the run writes into ``output_dir``,
    the config tree is not printed, and ``HydraConfig`` is set so ``${hydra:...}`` resolves.
    """
    register_schemas()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module("occaist.conf", version_base="1.3"):
            cfg = compose(config_name, overrides=list(overrides), return_hydra_config=True)
            if output_dir is not None:
                with open_dict(cfg):
                    cfg.paths.output_dir = str(output_dir)
                    cfg.paths.log_dir = str(output_dir)
                    cfg.hydra.runtime.output_dir = str(output_dir)
                    cfg.hydra.job.num = 0
                    cfg.hydra.job.id = "0"
                    if "extras" in cfg:
                        cfg.extras.print_config = False
                HydraConfig().set_config(cfg)
            yield cfg
    finally:
        GlobalHydra.instance().clear()
