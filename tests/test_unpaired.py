"""UnpairedDataModule: layouts, preprocessing (alpha proxy == alpha), pairing, errors, DDP."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from occaist.data.unpaired import (
    DataNotFoundError,
    UnpairedDataModule,
    load_rgba,
    to_tensor,
)

SYNSET = "02958343"


def write_rgba(path: Path, rng: np.random.Generator, size: int = 32, dark: bool = False) -> None:
    """A car-like RGBA: a random-coloured box on a transparent background whose RGB is noise
    (must be cleared by the reader); ``dark`` puts pure-black car pixels in (colour correction)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rgba = rng.integers(0, 256, (size, size, 4)).astype(np.uint8)
    rgba[..., 3] = 0
    top, left = rng.integers(2, size // 4, 2)
    rgba[top : top + size // 2, left : left + size // 2, 3] = 255
    if dark:
        rgba[top, left : left + 3, :3] = 0
    Image.fromarray(rgba, "RGBA").save(path)


def write_unpaired_tree(
    root: Path,
    models: dict[str, int] | None = None,
    real: dict[str, int] | None = None,
    views: int = 2,
    size: int = 32,
    seed: int = 0,
) -> tuple[Path, Path]:
    """DPC-layout renders and ``prepared/{train,test}`` segments under ``root``."""
    rng = np.random.default_rng(seed)
    models = models or {"train": 3, "val": 1, "test": 1}
    real = real or {"train": 4, "test": 2}
    renders = root / "shapenet_renders"
    count = 0
    for split, n in models.items():
        ids = [f"model{count + i:03d}" for i in range(n)]
        count += n
        (renders / "renders").mkdir(parents=True, exist_ok=True)
        (renders / "renders" / f"{SYNSET}_{split}.txt").write_text("\n".join(ids) + "\n")
        for model in ids:
            for view in range(views):
                path = renders / "renders" / SYNSET / model / f"render_{view}.png"
                write_rgba(path, rng, size, dark=view == 0)
    prepared = root / "prepared"
    for split, n in real.items():
        for i in range(n):
            write_rgba(prepared / split / f"cars_{split}_{i:05d}.png", rng, size, dark=i == 0)
    return renders, prepared


@pytest.fixture
def tree(tmp_path) -> tuple[Path, Path]:
    return write_unpaired_tree(tmp_path)


def _dm(tree, **kwargs) -> UnpairedDataModule:
    renders, prepared = tree
    kwargs = {"image_size": 32, "batch_size": 2, "num_workers": 0, **kwargs}
    return UnpairedDataModule(str(renders), str(prepared), **kwargs)


def test_alpha_proxy_equals_alpha_after_preprocessing(tree):
    renders, _ = tree
    path = renders / "renders" / SYNSET / "model000" / "render_0.png"  # has black car pixels
    raw = np.asarray(Image.open(path))
    rgba = load_rgba(path, 32)
    assert np.array_equal(rgba[..., 3], raw[..., 3])
    rgb = to_tensor(rgba, 3)
    assert torch.equal((rgb > -1).any(0), torch.from_numpy(rgba[..., 3] > 0))
    assert rgb.min() >= -1 and rgb.max() <= 1
    rgba_t = to_tensor(rgba, 4)
    assert rgba_t.shape == (4, 32, 32)
    assert torch.equal(rgba_t[3] > -1, torch.from_numpy(rgba[..., 3] > 0))


def test_epoch_length_pairing_and_splits(tree):
    dm = _dm(tree)
    dm.setup("fit")
    train, val = dm.datasets["train"], dm.datasets["val"]
    assert len(train) == max(3 * 2, 4)  # |A| = 3 models x 2 views, |B| = 4
    assert len(val) == max(1 * 2, 2)  # A val vs B test
    partners = {train[0]["B_index"] for _ in range(40)}
    assert len(partners) > 1  # a random partner every time in training
    assert [val[k]["B_index"] for k in range(2)] == [0, 1]  # fixed partner in evaluation
    assert [train[k]["A_index"] for k in range(6)] == list(range(6))
    batch = next(iter(dm.train_dataloader()))
    assert batch["A"].shape == (2, 3, 32, 32) and batch["B"].shape == (2, 3, 32, 32)
    dm.setup("test")
    assert len(dm.datasets["test"]) == 2


def test_resize_and_channels(tree):
    dm = _dm(tree, image_size=16, channels=4)
    dm.setup("fit")
    item = dm.datasets["train"][0]
    assert item["A"].shape == (4, 16, 16) and item["B"].shape == (4, 16, 16)
    with pytest.raises(ValueError, match="multiple of 4"):
        _dm(tree, image_size=30)


def test_flip_flips_horizontally(tree):
    dm = _dm(tree, flip=True)
    dm.setup("fit")
    ds = dm.datasets["train"]
    plain = ds._load(ds.a_files[0], flip=False)
    seen = {bool(torch.equal(ds[0]["A"], plain)) for _ in range(30)}
    assert seen == {True, False}  # sometimes flipped, sometimes not
    assert torch.equal(ds._load(ds.a_files[0], flip=True), plain.flip(-1))


def test_state_dict_restores_order_and_draws(tree):
    def indices(dm):
        return [(b["A_index"].tolist(), b["B_index"].tolist()) for b in dm.train_dataloader()]

    a = _dm(tree)
    a.setup("fit")
    indices(a)
    state = a.state_dict()
    expected = indices(a)
    b = _dm(tree)
    b.load_state_dict(state)
    assert indices(b) == expected


def test_missing_data_names_path_and_command(tmp_path, tree):
    renders, prepared = tree
    with pytest.raises(DataNotFoundError, match=r"(?s)nowhere.*python -m occaist\.synth"):
        UnpairedDataModule(str(tmp_path / "nowhere"), str(prepared), num_workers=0).setup("fit")
    with pytest.raises(DataNotFoundError, match=r"(?s)missing.*python -m occaist\.prep"):
        UnpairedDataModule(str(renders), str(tmp_path / "missing"), num_workers=0).setup("fit")


def test_lightning_injects_a_distributed_sampler(tree):
    """Under DDP each rank sees its own shard of max(|A|, |B|) items (no sampler set by hand)."""
    from torch.utils.data import DistributedSampler

    dm = _dm(tree)
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert type(loader.sampler).__name__ == "RandomSampler"  # Lightning replaces this one
    from pytorch_lightning.utilities.data import _update_dataloader

    shards = []
    for rank in range(2):
        sampler = DistributedSampler(loader.dataset, num_replicas=2, rank=rank, shuffle=True)
        shards.append(list(iter(_update_dataloader(loader, sampler).sampler)))
    assert sorted(shards[0] + shards[1]) == list(range(len(loader.dataset)))


def test_tiny_world_renders_alpha_proxy_is_exact(tiny_world, tmp_path):
    """On the synthetic renders the RGB > -1 proxy equals alpha > 0 after preprocessing."""
    renders = tiny_world / "shapenet_renders"
    _, prepared = write_unpaired_tree(tmp_path, models={"train": 1})
    dm = UnpairedDataModule(str(renders), str(prepared), num_workers=0, batch_size=2)
    dm.setup("fit")
    train = dm.datasets["train"]
    assert len(train) == max(len(train.a_files), 4)
    for path in train.a_files[:5]:
        rgba = load_rgba(path, 128)
        assert np.array_equal(rgba[..., 3], np.asarray(Image.open(path))[..., 3])
        proxy = (to_tensor(rgba, 3) > -1).any(0)
        assert torch.equal(proxy, torch.from_numpy(rgba[..., 3] > 0))
