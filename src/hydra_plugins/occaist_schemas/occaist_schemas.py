"""Registers occaist's schemas and resolvers whenever Hydra composes from occaist's config tree.

Hydra imports every module under the ``hydra_plugins`` namespace and calls each search-path
plugin before it composes. This one registers :func:`occaist.schemas.register_schemas` (cached
field specs: no torch import) when the search path holds occaist's ``conf`` folder, so the plain
Compose API works with no project call first::

    with initialize_config_dir(config_dir="<repo>/conf", version_base="1.3"):
        cfg = compose("train", overrides=["experiment=aist_constrained"])

Other Hydra applications in the same environment are left alone.

It also lets a command line swap any ``_target_`` node for another target with its own
arguments, ``model.optimizer={_target_: torch.optim.SGD, _partial_: true, lr: 0.01,
momentum: 0.9}``: Hydra would *merge* that dict into the existing Adam node (keeping Adam's
``betas`` and refusing ``momentum`` under struct mode); an override whose ``_target_`` differs
from the node's *replaces* the node instead. The new node is validated against the target it
names by :func:`occaist.schemas.validate_targets` before anything is built.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin


def _occaist_conf() -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec("occaist")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))).resolve() / "conf"


def _uses_occaist_conf(search_path: ConfigSearchPath) -> bool:
    conf = _occaist_conf()
    if conf is None:
        return False
    for element in search_path.get_path():
        path = element.path or ""
        if path.startswith("pkg://"):  # pkg://occaist.conf (compose API) or pkg://occaist/conf
            if path[len("pkg://") :].replace("/", ".").startswith("occaist.conf"):
                return True
            continue
        if path.startswith("file://"):
            path = path[len("file://") :]
        try:
            resolved = Path(os.path.abspath(path)).resolve()
        except OSError:
            continue
        if resolved == conf or conf in resolved.parents:
            return True
    return False


def _swapped_target(cfg: Any, key: str, value: Any) -> bool:
    """Whether ``key=value`` names another ``_target_`` than the node now at ``key``."""
    from omegaconf import DictConfig, OmegaConf

    if not (isinstance(value, dict) and "_target_" in value):
        return False
    node = OmegaConf.select(cfg, key, throw_on_missing=False)
    return isinstance(node, DictConfig) and node.get("_target_") != value["_target_"]


def _replace_node(cfg: Any, key: str, value: dict) -> None:
    from omegaconf import OmegaConf, open_dict

    parent_key, _, leaf = key.rpartition(".")
    parent = OmegaConf.select(cfg, parent_key) if parent_key else cfg
    with open_dict(parent):
        parent[leaf] = value


def _install_target_swap() -> None:
    """Wrap Hydra's override application once (see the module docstring)."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    original = ConfigLoaderImpl._apply_overrides_to_config
    if getattr(original, "_occaist_swap", False):
        return

    def apply(overrides: list[Any], cfg: Any) -> None:
        for override in overrides:
            plain = not (override.is_delete() or override.is_add() or override.is_force_add())
            key = override.key_or_group
            if plain:
                value = override.value()
                if _swapped_target(cfg, key, value):
                    _replace_node(cfg, key, value)
                    continue
            original([override], cfg)

    apply._occaist_swap = True  # type: ignore[attr-defined]
    ConfigLoaderImpl._apply_overrides_to_config = staticmethod(apply)


def _share_config_store_on_deepcopy() -> None:
    """Let ``copy.deepcopy`` return the ConfigStore singleton itself.

    Hydra deep-copies its config repository for every caching repository it creates (once per
    config group when it prints ``--help``), and the structured-config source holds the whole
    ConfigStore: with occaist's ~40 typed schemas that was seconds of copying per command. The
    store is a process-wide singleton that Hydra never mutates through a copy (``load`` already
    returns a deep copy of the node it reads), so sharing it is safe.
    """
    from hydra.core.config_store import ConfigStore

    if "__deepcopy__" not in ConfigStore.__dict__:
        ConfigStore.__deepcopy__ = lambda self, memo: self  # type: ignore[attr-defined]


class OccaistSchemasSearchPathPlugin(SearchPathPlugin):
    """Adds nothing to the search path; registers occaist's schemas when its tree is used."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        if _uses_occaist_conf(search_path):
            from occaist.schemas import register_schemas

            register_schemas()
            _install_target_swap()
            _share_config_store_on_deepcopy()
