"""Image pool semantics (upstream ImagePool): fill to capacity, then 50/50 swap; resumable."""

from __future__ import annotations

import torch

from occaist.models.aist.image_pool import ImagePool


def _images(start: int, n: int) -> torch.Tensor:
    """(n, 1, 1, 1) images whose single value is their id."""
    return torch.arange(start, start + n, dtype=torch.float32).view(n, 1, 1, 1)


def test_fills_to_capacity_returning_the_inputs():
    pool = ImagePool(pool_size=5, seed=0)
    for start in (0, 2):
        out = pool.query(_images(start, 2))
        assert torch.equal(out, _images(start, 2))
    out = pool.query(_images(4, 2))  # image 4 fills the last slot, image 5 is past capacity
    assert out[0].item() == 4
    assert len(pool) == 5
    stored = sorted(t.item() for t in pool.images)
    if out[1].item() == 5:  # not swapped: the pool is exactly the first five images
        assert stored == [0, 1, 2, 3, 4]
    else:  # swapped: a stored image came back and image 5 took its slot
        assert out[1].item() in range(5) and 5 in stored and out[1].item() not in stored


def test_full_pool_swaps_about_half_the_time():
    pool = ImagePool(pool_size=50, seed=1)
    pool.query(_images(0, 50))
    swapped, n = 0, 2000
    for i in range(n):
        image = _images(1000 + i, 1)
        out = pool.query(image)
        if out.item() != image.item():
            swapped += 1
            assert out.item() < 1000 + i  # an earlier image comes back ...
            assert any(t.item() == 1000 + i for t in pool.images)  # ... and is replaced
        assert len(pool) == 50
    assert abs(swapped / n - 0.5) < 0.05


def test_seeded_and_state_dict_round_trip():
    a, b = ImagePool(4, seed=3), ImagePool(4, seed=3)
    for pool in (a, b):
        pool.query(_images(0, 6))
    assert torch.equal(torch.stack(a.images), torch.stack(b.images))
    state = a.state_dict()
    c = ImagePool(4, seed=99)
    c.load_state_dict(state)
    for start in range(10, 60, 5):
        assert torch.equal(a.query(_images(start, 5)), c.query(_images(start, 5)))


def test_pool_size_zero_is_identity_and_output_is_detached():
    x = torch.rand(3, 2, 4, 4, requires_grad=True)
    out = ImagePool(0).query(x * 2)
    assert torch.equal(out, x.detach() * 2) and not out.requires_grad
    assert not ImagePool(2).query(x * 2).requires_grad
