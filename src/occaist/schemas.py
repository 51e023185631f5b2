"""Typed schemas behind every Hydra config group, so mistakes fail at compose time.

Plain YAML composes silently when an experiment file misspells a key (``lamda_alpha: 2``) or
gives a value of the wrong type; the error, if any, surfaces minutes later inside
``instantiate``. Here every config node that names a ``_target_`` is backed by a dataclass
stored in Hydra's ConfigStore, and the YAML lists it first in its defaults
(``defaults: [base_<file name>, _self_]``). Hydra then merges the YAML onto the dataclass and
rejects unknown keys and unconvertible values with the full key path, e.g.
``Key 'lamda_alpha' not in 'AISTCycleGAN' full_key: model.lamda_alpha``.

The dataclasses are *derived from the constructors' signatures* (names, type hints, defaults), so
the schema and the code cannot drift: adding an argument to a LightningModule makes it
configurable and validated at once. Hand-written schemas cover the non-``_target_`` groups
(``paths``, ``extras``). Nested ``_target_`` nodes (an optimizer partial, a sub-network) get their
own derived dataclass.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import os
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, field, make_dataclass
from enum import Enum
from importlib import resources
from pathlib import Path
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

#: Groups whose YAML files are scanned for ``_target_`` nodes.
TARGET_GROUPS = ("data", "model", "trainer", "callbacks", "logger")

_PRIMITIVES = (int, float, bool, str)


@dataclasses.dataclass
class PathsConfig:
    """Where things live. Every path may be overridden on the command line."""

    root_dir: str = "."
    data_dir: str = "data"
    log_dir: str = "logs"
    # None only while Hydra has not created the run directory yet (``--cfg job --resolve``)
    output_dir: Optional[str] = "outputs"  # noqa: UP045
    work_dir: Optional[str] = "."  # noqa: UP045


@dataclasses.dataclass
class ExtrasConfig:
    """Start-up behaviour of the entry points."""

    ignore_warnings: bool = False
    print_config: bool = True
    seed_workers: bool = True
    matmul_precision: Optional[str] = None  # noqa: UP045  (OmegaConf needs typing.Optional)
    num_threads: Optional[int] = None  # noqa: UP045


def conf_dir() -> Path:
    """The Hydra config tree shipped inside the package (``conf/`` at the repo root links here)."""
    return Path(str(resources.files("occaist") / "conf"))


def _import_target_any(path: str) -> Any:
    """Import ``a.b.C`` or nested ``a.b.C.D`` (walks back until a module imports)."""
    parts = path.split(".")
    for i in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(f"cannot import {path!r}")


def _omegaconf_type(hint: Any, default: Any) -> Any:
    """Map a Python type hint onto one OmegaConf can validate; ``Any`` when it cannot."""
    if hint is inspect.Parameter.empty or hint is Any:
        return Any
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        non_none = [a for a in args if a is not type(None)]
        if len(non_none) == 1 and len(args) == 2:
            inner = _omegaconf_type(non_none[0], None)
            return Any if inner is Any else Optional[inner]  # noqa: UP045
        return Any
    if hint in _PRIMITIVES:
        if default is None:
            return Optional[hint]  # noqa: UP045
        return hint
    if isinstance(hint, type) and issubclass(hint, Enum):
        return hint
    if origin in (list, Sequence, tuple, typing.Sequence) or hint in (list, tuple):
        item = args[0] if args and args[0] is not Ellipsis else Any
        item = item if item in _PRIMITIVES else Any
        typ = list[item] if item is not Any else list[Any]
        return Optional[typ] if default is None else typ  # noqa: UP045
    if origin in (dict, Mapping, typing.Mapping) or hint in (dict,):
        return Optional[dict[str, Any]] if default is None else dict[str, Any]  # noqa: UP045
    return Any


def _is_object_default(value: Any) -> bool:
    """Whether a signature default is an object OmegaConf cannot hold (not None/primitive)."""
    return not (
        value is inspect.Parameter.empty
        or value is None
        or isinstance(value, (*_PRIMITIVES, Enum, tuple, list, dict))
    )


def _field_default(value: Any) -> Any:
    if value is inspect.Parameter.empty:
        return field(default=MISSING)
    if isinstance(value, (tuple, list)):
        items = list(value)
        return field(default_factory=lambda: list(items))
    if isinstance(value, dict):
        items = dict(value)
        return field(default_factory=lambda: dict(items))
    if value is None or isinstance(value, (*_PRIMITIVES, Enum)):
        return field(default=value)
    return field(default=None)  # an object default that the YAML sets explicitly


def _signature_params(target: Any) -> tuple[list[inspect.Parameter], dict[str, Any], bool]:
    fn = target.__init__ if inspect.isclass(target) else target
    sig = inspect.signature(fn)
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # a forward reference we cannot resolve: validate names only
        hints = {}
    params = [
        p
        for p in sig.parameters.values()
        if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    has_kwargs = any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values())
    return params, hints, has_kwargs


def schema_for_node(node: Mapping[str, Any], name: str) -> type:
    """Derive a dataclass for one ``_target_`` node of a YAML file (recursing into sub-targets).

    Keys present in ``node`` that the signature does not know are only accepted when the target
    takes ``**kwargs`` (typed ``Any``); otherwise they are errors at compose time.
    """
    target_path = node["_target_"]
    target = _import_target_any(target_path)
    params, hints, has_kwargs = _signature_params(target)
    fields: list[tuple[str, Any, Any]] = [
        ("_target_", str, field(default=target_path)),
        ("_partial_", bool, field(default=False)),
        ("_recursive_", bool, field(default=True)),
        ("_convert_", str, field(default="none")),
    ]
    known = set()
    for p in params:
        known.add(p.name)
        sub = node.get(p.name) if isinstance(node, Mapping) else None
        if isinstance(sub, Mapping) and "_target_" in sub:
            sub_schema = schema_for_node(sub, f"{name}_{p.name}")
            fields.append((p.name, Optional[sub_schema], field(default=None)))  # noqa: UP045
            continue
        if _is_object_default(p.default) and p.name not in node:
            # an object default (a theme, a module) has no YAML form: leave it to the
            # constructor instead of passing None; a YAML that sets the key gets an Any field
            continue
        typ = _omegaconf_type(hints.get(p.name, p.annotation), p.default)
        fields.append((p.name, typ, _field_default(p.default)))
    if has_kwargs:
        for key in node:
            if key not in known and key != "defaults" and not str(key).startswith("_"):
                fields.append((str(key), Any, field(default=None)))
    cls_name = getattr(target, "__name__", name)
    return make_dataclass(cls_name, fields, kw_only=True)


def _yaml_targets(path: Path) -> dict[str, Any]:
    """The ``_target_`` nodes of one YAML file: ``{"": node}`` at top level, or keyed children."""
    raw = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    if not isinstance(raw, dict):
        return {}
    if "_target_" in raw:
        return {"": raw}
    return {k: v for k, v in raw.items() if isinstance(v, dict) and "_target_" in v}


def schema_name(yaml_file: Path) -> str:
    """The ConfigStore name of a YAML file's schema: ``base_<file stem>``."""
    return f"base_{yaml_file.stem}"


def _sweep_group() -> str | None:
    """``<job name>-<sweep dir name>`` in a multirun (one W&B group per sweep), else ``None``."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return None
    return f"{hydra_cfg.job.name}-{Path(hydra_cfg.sweep.dir).name}"


def _run_name(task_name: str) -> str:
    """``task_name`` for a single run, ``task_name/<job number>`` inside a multirun."""
    from hydra.core.hydra_config import HydraConfig

    if _sweep_group() is None:
        return task_name
    return f"{task_name}/{HydraConfig.get().job.num}"


def _cwd() -> str:
    """The directory the command was started in (``hydra.runtime.cwd`` without needing Hydra).

    ``${hydra:runtime.cwd}`` is unset while Hydra computes the sweep directory of a multirun, and
    ``oc.env`` evaluates its default eagerly, so ``paths.root_dir`` reads the cwd through this.
    """
    return os.getcwd()


def register_resolvers() -> None:
    """Resolvers of the YAML tree: ``${occaist.cwd:}``, ``${occaist.sweep_group:}``,
    ``${occaist.run_name:x}``."""
    if not OmegaConf.has_resolver("occaist.cwd"):
        OmegaConf.register_new_resolver("occaist.cwd", _cwd)
    if not OmegaConf.has_resolver("occaist.sweep_group"):
        OmegaConf.register_new_resolver("occaist.sweep_group", _sweep_group)
    if not OmegaConf.has_resolver("occaist.run_name"):
        OmegaConf.register_new_resolver("occaist.run_name", _run_name)


@functools.cache
def register_schemas() -> None:
    """Store a schema in Hydra's ConfigStore for every YAML with ``_target_`` nodes.

    Idempotent and cached: call it before ``compose`` or ``@hydra.main`` (the entry points and
    the test-suite do).
    """
    register_resolvers()
    cs = ConfigStore.instance()
    cs.store(group="paths", name="base_paths", node=PathsConfig)
    cs.store(group="extras", name="base_extras", node=ExtrasConfig)
    root = conf_dir()
    for group in TARGET_GROUPS:
        for yaml_file in sorted((root / group).glob("*.yaml")):
            targets = _yaml_targets(yaml_file)
            if not targets:
                continue
            if "" in targets:
                node: Any = schema_for_node(targets[""], yaml_file.stem)
            else:
                node = {
                    key: schema_for_node(value, f"{yaml_file.stem}_{key}")
                    for key, value in targets.items()
                }
            cs.store(group=group, name=schema_name(yaml_file), node=node)
