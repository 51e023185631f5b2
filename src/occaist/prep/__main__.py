"""``python -m occaist.prep``: prepare Stanford Cars into the AIST real domain.

Examples::

    python -m occaist.prep data_dir=/data/synthetic_world              # provided masks
    python -m occaist.prep segmenter=maskrcnn data_root=/data/stanford_cars \
        ratio_fit.renders_root=/data/shapenet_renders workers=4
    python -m occaist.prep segmenter=maskrcnn --shard 3/16             # one array-job task

``--shard i/n`` is accepted as a convenience and turned into the override ``shard=i/n``.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from occaist.prep.pipeline import PrepSettings, run_prep


def settings_from_config(cfg: DictConfig) -> PrepSettings:
    """Validate the composed config against :class:`PrepSettings` (unknown keys and wrong types
    fail here, with the key's path) and return it as a dataclass."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    plain.pop("hydra", None)
    for key in ("data_dir", "task_name"):
        plain.pop(key, None)
    segmenter = plain.pop("segmenter", None)
    schema = OmegaConf.structured(PrepSettings)
    merged = OmegaConf.merge(schema, plain)
    settings: PrepSettings = OmegaConf.to_object(merged)
    settings.segmenter = segmenter
    return settings


def _shard_flag_to_override(argv: list[str]) -> list[str]:
    out: list[str] = []
    it = iter(argv)
    for arg in it:
        if arg == "--shard":
            out.append(f"shard={next(it)}")
        elif arg.startswith("--shard="):
            out.append(f"shard={arg.split('=', 1)[1]}")
        else:
            out.append(arg)
    return out


@hydra.main(config_path="../conf/prep", config_name="prep", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Run the preparation described by ``cfg``."""
    run_prep(settings_from_config(cfg))


if __name__ == "__main__":
    sys.argv = _shard_flag_to_override(sys.argv)
    main()
