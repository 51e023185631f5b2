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
import hashlib
import importlib
import inspect
import json
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


# ---- field specs: the schema as plain data, so it can be cached without importing targets ----
# A spec is ``[class name, [[field, type spec, default spec], ...]]``. Type specs: "int", "float",
# "bool", "str", "any", ["optional", t], ["list", t], ["dict"], ["enum", "module.Class"].
# Default specs: ["missing"], ["value", v], ["enum", "module.Class", "NAME"], ["factory", v].

_TYPE_NAMES = {int: "int", float: "float", bool: "bool", str: "str"}


def _type_spec(typ: Any) -> Any:
    if typ is Any:
        return "any"
    if typ in _TYPE_NAMES:
        return _TYPE_NAMES[typ]
    if isinstance(typ, type) and issubclass(typ, Enum):
        return ["enum", f"{typ.__module__}.{typ.__qualname__}"]
    origin, args = typing.get_origin(typ), typing.get_args(typ)
    if origin is typing.Union:
        return ["optional", _type_spec(next(a for a in args if a is not type(None)))]
    if origin is list:
        return ["list", _type_spec(args[0])]
    if origin is dict:
        return ["dict"]
    return "any"


def _type_from_spec(spec: Any) -> Any:
    if isinstance(spec, str):
        return {"any": Any, "int": int, "float": float, "bool": bool, "str": str}[spec]
    kind = spec[0]
    if kind == "optional":
        return Optional[_type_from_spec(spec[1])]  # noqa: UP045
    if kind == "list":
        return list[_type_from_spec(spec[1])]
    if kind == "dict":
        return dict[str, Any]
    return _import_target_any(spec[1])  # enum


def _default_spec(value: Any) -> list[Any]:
    if value is inspect.Parameter.empty:
        return ["missing"]
    if isinstance(value, Enum):
        return ["enum", f"{type(value).__module__}.{type(value).__qualname__}", value.name]
    if isinstance(value, (tuple, list)):
        return ["factory", list(value)]
    if isinstance(value, dict):
        return ["factory", dict(value)]
    if value is None or isinstance(value, _PRIMITIVES):
        return ["value", value]
    return ["value", None]  # an object default that the YAML sets explicitly


def _field_from_spec(spec: list[Any]) -> Any:
    kind = spec[0]
    if kind == "missing":
        return field(default=MISSING)
    if kind == "enum":
        return field(default=getattr(_import_target_any(spec[1]), spec[2]))
    if kind == "factory":
        value = spec[1]
        return field(default_factory=lambda: type(value)(value))
    return field(default=spec[1])


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


def node_spec(node: Mapping[str, Any], name: str) -> list[Any]:
    """The field spec of one ``_target_`` node, derived from the named target's signature.

    A key whose value is itself a ``_target_`` node is typed ``Any`` here, so that an override
    or an experiment can swap it for another target with other arguments (an optimizer, a
    scheduler, a backbone); :func:`validate_targets` checks such nodes against the target they
    actually name. Keys the signature does not know are errors unless it takes ``**kwargs``.
    """
    target_path = node["_target_"]
    target = _import_target_any(target_path)
    params, hints, has_kwargs = _signature_params(target)
    fields: list[list[Any]] = [
        ["_target_", "str", ["value", target_path]],
        ["_partial_", "bool", ["value", False]],
        ["_recursive_", "bool", ["value", True]],
        ["_convert_", "str", ["value", "none"]],
    ]
    known = set()
    for p in params:
        known.add(p.name)
        sub = node.get(p.name) if isinstance(node, Mapping) else None
        if isinstance(sub, Mapping) and "_target_" in sub:
            fields.append([p.name, "any", ["value", None]])
            continue
        if _is_object_default(p.default) and p.name not in node:
            # an object default (a theme, a module) has no YAML form: leave it to the
            # constructor instead of passing None; a YAML that sets the key gets an Any field
            continue
        typ = _omegaconf_type(hints.get(p.name, p.annotation), p.default)
        fields.append([p.name, _type_spec(typ), _default_spec(p.default)])
    if has_kwargs:
        for key in node:
            if key not in known and key != "defaults" and not str(key).startswith("_"):
                fields.append([str(key), "any", ["value", None]])
    return [getattr(target, "__name__", name), fields]


def dataclass_from_spec(spec: list[Any]) -> type:
    """The dataclass a field spec describes (no import of the target needed)."""
    cls_name, fields = spec
    return make_dataclass(
        cls_name,
        [(f, _type_from_spec(t), _field_from_spec(d)) for f, t, d in fields],
        kw_only=True,
    )


def schema_for_node(node: Mapping[str, Any], name: str) -> type:
    """Derive a dataclass for one ``_target_`` node (see :func:`node_spec`)."""
    return dataclass_from_spec(node_spec(node, name))


def validate_targets(cfg: Any, prefix: str = "") -> None:
    """Check every ``_target_`` node of a composed config against the target it names.

    Compose time checks each group's node against its default target; a node swapped for
    another target (``model.optimizer={_target_: torch.optim.SGD, momentum: 0.9}``) is checked
    here, before anything is built, with the full key in the message.
    """
    from omegaconf import DictConfig, ListConfig
    from omegaconf.errors import OmegaConfBaseException

    from occaist.utils.errors import UserError

    if isinstance(cfg, (DictConfig, ListConfig)) and (
        cfg._is_none() or cfg._is_missing() or cfg._is_interpolation()
    ):
        return
    if isinstance(cfg, DictConfig):
        if "_target_" in cfg and prefix:
            node = OmegaConf.to_container(cfg, resolve=False)
            try:
                schema = schema_for_node(node, prefix.replace(".", "_"))
                OmegaConf.merge(OmegaConf.structured(schema), OmegaConf.create(node))
            except (OmegaConfBaseException, ImportError, AttributeError) as err:
                first = str(err).splitlines()[0]
                raise UserError(f"invalid config at {prefix}: {first}") from err
        for key in cfg:
            if key == "hydra":
                continue
            child = cfg._get_node(key)
            if isinstance(child, (DictConfig, ListConfig)):
                validate_targets(child, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(cfg, ListConfig):
        for i, child in enumerate(cfg._iter_ex(resolve=False)):
            if isinstance(child, (DictConfig, ListConfig)):
                validate_targets(child, f"{prefix}[{i}]")


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


def _sweep_group(task_name: str = "") -> str | None:
    """``<task name>-<sweep dir name>`` in a multirun (one W&B group per sweep), else ``None``."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return None
    return f"{task_name or hydra_cfg.job.name}-{Path(hydra_cfg.sweep.dir).name}"


def _run_name(task_name: str) -> str:
    """``task_name`` for a single run, ``task_name/<job number>`` inside a multirun."""
    from hydra.core.hydra_config import HydraConfig

    if _sweep_group(task_name) is None:
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


#: Distributions whose classes the schemas are derived from (their versions key the cache).
_SCHEMA_DISTRIBUTIONS = ("torch", "torchvision", "pytorch-lightning", "torchmetrics", "hydra-core")


def _cache_key(root: Path) -> str:
    """A hash of what the schemas depend on: the config tree, the package's sources, versions."""
    from importlib import metadata

    digest = hashlib.sha256()
    package = Path(__file__).resolve().parent
    for path in sorted([*root.rglob("*.yaml"), *package.rglob("*.py")]):
        digest.update(f"{path.relative_to(package)}\n".encode())
        digest.update(path.read_bytes())
    for dist in _SCHEMA_DISTRIBUTIONS:
        try:
            digest.update(f"{dist}={metadata.version(dist)}\n".encode())
        except metadata.PackageNotFoundError:
            digest.update(f"{dist}=absent\n".encode())
    return digest.hexdigest()[:24]


def _cache_file(key: str) -> Path:
    base = os.environ.get("OCCAIST_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "occaist"
    )
    return Path(base) / "schemas" / f"{key}.json"


def schema_specs(root: Path | None = None) -> dict[str, dict[str, Any]]:
    """``{group: {yaml stem: spec or {child key: spec}}}`` for every YAML with ``_target_``.

    Deriving them imports every target (torch, Lightning: seconds), so they are cached as JSON
    under ``$OCCAIST_CACHE`` (default ``~/.cache/occaist``), keyed by the config tree, the
    package's sources and the versions of the libraries the targets come from.
    """
    root = root or conf_dir()
    key = _cache_key(root)
    cache = _cache_file(key)
    if cache.is_file():
        try:
            return json.loads(cache.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            pass  # unreadable cache: derive again
    specs: dict[str, dict[str, Any]] = {}
    for group in TARGET_GROUPS:
        for yaml_file in sorted((root / group).glob("*.yaml")):
            targets = _yaml_targets(yaml_file)
            if not targets:
                continue
            if "" in targets:
                specs.setdefault(group, {})[yaml_file.stem] = node_spec(
                    targets[""], yaml_file.stem
                )
            else:
                specs.setdefault(group, {})[yaml_file.stem] = {
                    k: node_spec(v, f"{yaml_file.stem}_{k}") for k, v in targets.items()
                }
    try:
        from occaist.utils.io import write_text_atomic

        write_text_atomic(cache, json.dumps(specs))
    except OSError:
        pass  # a read-only home: derive each time
    return specs


@functools.cache
def register_schemas() -> None:
    """Store a schema in Hydra's ConfigStore for every YAML with ``_target_`` nodes.

    Idempotent and cached. Hydra calls it through the project's search-path plugin
    (``hydra_plugins.occaist``) before any composition, so plain ``initialize_config_dir`` +
    ``compose`` works with no project call first; the entry points call it too.
    """
    register_resolvers()
    cs = ConfigStore.instance()
    cs.store(group="paths", name="base_paths", node=PathsConfig)
    cs.store(group="extras", name="base_extras", node=ExtrasConfig)
    for group, files in schema_specs().items():
        for stem, spec in files.items():
            if isinstance(spec, dict):
                node: Any = {k: dataclass_from_spec(v) for k, v in spec.items()}
            else:
                node = dataclass_from_spec(spec)
            cs.store(group=group, name=f"base_{stem}", node=node)
