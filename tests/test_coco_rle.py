"""COCO RLE against pycocotools' published vectors and brute-force mask statistics."""

from __future__ import annotations

import numpy as np
import pytest

from occaist.data import coco_rle


@pytest.mark.parametrize(
    ("counts", "string"),
    [([1, 2, 2, 1], "122O"), ([42, 1], "Z11"), ([9, 2, 2, 2, 5], "92203")],
)
def test_string_codec_known_vectors(counts, string):
    assert coco_rle.counts_to_string(counts) == string
    assert coco_rle.counts_from_string(string) == counts


def test_column_major_order():
    mask = np.array([[0, 1, 0], [1, 0, 1]], dtype=np.uint8)  # size [2, 3] alternating runs
    assert coco_rle.encode_uncompressed(mask) == {"size": [2, 3], "counts": [1, 2, 2, 1]}
    assert coco_rle.encode(mask)["counts"] == "122O"


def _bbox_brute(mask):
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return [0.0, 0.0, 0.0, 0.0]
    return [
        float(xs.min()),
        float(ys.min()),
        float(xs.max() - xs.min() + 1),
        float(ys.max() - ys.min() + 1),
    ]


def test_random_masks_round_trip():
    rng = np.random.default_rng(0)
    for trial in range(40):
        h, w = rng.integers(1, 40, size=2)
        kind = trial % 4
        if kind == 0:
            mask = rng.random((h, w)) < 0.5
        elif kind == 1:
            mask = np.zeros((h, w), bool)
            y0, x0 = rng.integers(0, h), rng.integers(0, w)
            mask[y0 : y0 + rng.integers(1, 10), x0 : x0 + rng.integers(1, 10)] = True
        elif kind == 2:
            mask = np.ones((h, w), bool)
        else:
            mask = np.zeros((h, w), bool)
        for rle in (coco_rle.encode(mask), coco_rle.encode_uncompressed(mask)):
            np.testing.assert_array_equal(coco_rle.decode(rle), mask.astype(np.uint8))
            assert coco_rle.area(rle) == int(mask.sum())
        if kind in (1, 2, 3):  # no run wraps a column partially: the box is tight
            assert coco_rle.to_bbox(coco_rle.encode(mask)) == _bbox_brute(mask)


def test_large_counts_and_bytes_input():
    mask = np.zeros((300, 400), bool)
    mask[50:250, 100:300] = True
    rle = coco_rle.encode(mask)
    rle_bytes = {"size": rle["size"], "counts": rle["counts"].encode("ascii")}
    np.testing.assert_array_equal(coco_rle.decode(rle_bytes), mask)
    assert coco_rle.to_bbox(rle) == [100.0, 50.0, 200.0, 200.0]


def test_wrapping_run_widens_box_like_pycocotools():
    mask = np.zeros((4, 3), bool)
    mask[3, 0] = mask[0, 1] = True  # one run wrapping from column 0 into column 1
    assert coco_rle.to_bbox(coco_rle.encode(mask)) == [0.0, 0.0, 2.0, 4.0]


def test_bad_counts_raise():
    with pytest.raises(ValueError, match="expected"):
        coco_rle.decode({"size": [2, 2], "counts": [1, 2]})
