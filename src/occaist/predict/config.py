"""The typed predict options behind ``conf/predict.yaml``, checked when a run starts."""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf


@dataclasses.dataclass
class PredictOptions:
    """The keys ``predict.yaml`` adds to the training config tree (see its comments)."""

    ckpt_path: str
    input: str
    output: str
    limit: Optional[int] = None  # noqa: UP045  (OmegaConf needs typing.Optional)
    save_overlays: bool = True
    batch_size: int = 8
    num_workers: int = 0
    device: str = "auto"
    progress: bool = True
    visibility_threshold: float = 0.5
    overlay_score_threshold: float = 0.5
    camera_K: Optional[list[float]] = None  # noqa: UP045


def check_options(cfg: DictConfig) -> PredictOptions:
    """``cfg``'s predict options as :class:`PredictOptions`.

    Raises:
        omegaconf.errors.ValidationError: a value of the wrong type (``limit=ten``), with the key.
        omegaconf.errors.MissingMandatoryValue: ``ckpt_path`` or ``input`` not given.
    """
    names = [f.name for f in dataclasses.fields(PredictOptions)]
    given: dict[str, Any] = {name: cfg[name] for name in names if name in cfg}
    schema = OmegaConf.structured(PredictOptions)
    merged = OmegaConf.merge(schema, given)
    return OmegaConf.to_object(merged)
