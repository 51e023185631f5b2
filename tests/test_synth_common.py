"""The readers' SYNTHETIC warning: once per root and process, also for sub-folders."""

from __future__ import annotations

import logging

from occaist.data import common


def test_warns_once_per_root(tmp_path, caplog):
    (tmp_path / "SYNTHETIC").write_text("generated\n")
    sub = tmp_path / "stanford_cars"
    sub.mkdir()
    plain = tmp_path.parent / f"{tmp_path.name}_real"
    plain.mkdir()
    with caplog.at_level(logging.WARNING, logger="occaist.data.common"):
        assert common.warn_if_synthetic(sub)
        assert common.warn_if_synthetic(sub)
        assert common.warn_if_synthetic(tmp_path)
        assert not common.warn_if_synthetic(plain)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert all("SYNTHETIC" in m for m in messages)
