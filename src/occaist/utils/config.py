"""Printing and saving the resolved config; instantiating callbacks and loggers from it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from occaist.utils.io import write_text_atomic
from occaist.utils.logging import RankedLogger

log = RankedLogger(__name__)

PRINT_ORDER = ("data", "model", "callbacks", "logger", "trainer", "paths", "extras")


#: Keys every typed schema adds with Hydra's defaults; shown only when set otherwise.
SCHEMA_DEFAULTS = {"_partial_": False, "_recursive_": True, "_convert_": "none"}


def without_schema_defaults(value: Any) -> Any:
    """A plain config with the schemas' ``_partial_/_recursive_/_convert_`` defaults dropped."""
    if isinstance(value, dict):
        return {
            k: without_schema_defaults(v)
            for k, v in value.items()
            if not (k in SCHEMA_DEFAULTS and v == SCHEMA_DEFAULTS[k])
        }
    if isinstance(value, list):
        return [without_schema_defaults(v) for v in value]
    return value


def _resolved_groups(cfg: DictConfig, order: Sequence[str]) -> dict[str, Any]:
    resolved = without_schema_defaults(OmegaConf.to_container(cfg, resolve=True))
    keys = [k for k in order if k in resolved] + [k for k in resolved if k not in order]
    return {key: resolved[key] for key in keys}


def config_tree_text(cfg: DictConfig, order: Sequence[str] = PRINT_ORDER) -> str:
    """The resolved config as YAML with the main groups first (what ``config_tree.log`` holds)."""
    return OmegaConf.to_yaml(OmegaConf.create(_resolved_groups(cfg, order)))


def print_config_tree(cfg: DictConfig, save_to: str | Path | None = None) -> None:
    """Show the resolved config as a rich tree; save it as ``config_tree.log`` in ``save_to``."""
    import rich
    import rich.syntax
    import rich.tree

    tree = rich.tree.Tree("CONFIG", style="dim", guide_style="dim")
    for key, value in _resolved_groups(cfg, PRINT_ORDER).items():
        branch = tree.add(key, style="bold", guide_style="dim")
        text = OmegaConf.to_yaml(value) if isinstance(value, (dict, list)) else str(value)
        branch.add(rich.syntax.Syntax(text, "yaml"))
    rich.print(tree)
    if save_to is not None:
        write_text_atomic(Path(save_to) / "config_tree.log", config_tree_text(cfg))


def instantiate_collection(cfg: DictConfig | None, kind: str) -> list[Any]:
    """Instantiate every ``_target_`` entry of a keyed group (``callbacks``, ``logger``)."""
    objects: list[Any] = []
    if not cfg:
        log.info("no %s configured", kind)
        return objects
    if not isinstance(cfg, DictConfig):
        raise TypeError(f"{kind} config must be a mapping of named entries, got {type(cfg)}")
    for name, conf in cfg.items():
        if isinstance(conf, DictConfig) and "_target_" in conf:
            log.info("instantiating %s %s <%s>", kind, name, conf._target_)
            objects.append(hydra.utils.instantiate(conf))
    return objects
