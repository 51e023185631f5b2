"""The weights helper: local files only, clear errors, explicit paths and random init."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from torch import nn

from occaist.utils import weights


def test_default_path_is_torchvision_cache(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    assert weights.default_weights_path("resnet18") == (
        tmp_path / "th" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    )


def test_missing_file_error_names_path_and_source(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    expected = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    with pytest.raises(weights.MissingWeightsError) as err:
        weights.load_pretrained(nn.Linear(2, 2), "resnet18")
    message = str(err.value)
    assert str(expected) in message
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in message
    assert "ResNet18_Weights.IMAGENET1K_V1" in message


def test_explicit_missing_path_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "maskrcnn.pth"
    with pytest.raises(weights.MissingWeightsError, match=str(missing)):
        weights.resolve_weights_path("maskrcnn_resnet50_fpn", missing)


def test_explicit_path_loads_the_tensors(tmp_path: Path) -> None:
    source = nn.Linear(3, 2)
    file = tmp_path / "linear.pth"
    torch.save(source.state_dict(), file)
    target = nn.Linear(3, 2)
    weights.load_pretrained(target, "resnet18", path=file)
    assert torch.equal(target.weight, source.weight)
    assert torch.equal(target.bias, source.bias)


def test_cache_file_is_found(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    source = nn.Linear(3, 2)
    cached = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    cached.parent.mkdir(parents=True)
    torch.save({"state_dict": source.state_dict()}, cached)
    target = weights.load_pretrained(nn.Linear(3, 2), "resnet18")
    assert torch.equal(target.weight, source.weight)


def test_none_keeps_random_weights_with_a_loud_warning(caplog: pytest.LogCaptureFixture) -> None:
    model = nn.Linear(3, 2)
    before = model.weight.detach().clone()
    with caplog.at_level(logging.WARNING, logger="occaist.utils.weights"):
        weights.load_pretrained(model, "resnet18", path=None)
    assert torch.equal(model.weight, before)
    assert "RANDOM" in caplog.text


def test_unknown_name_lists_known() -> None:
    with pytest.raises(KeyError, match="resnet18"):
        weights.default_weights_path("vgg99")
