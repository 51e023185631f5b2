"""AIST real-image preparation (thesis chapter 3): ``python -m occaist.prep``.

Modules: :mod:`~occaist.prep.segment` (Mask R-CNN or provided masks), :mod:`~occaist.prep.filters`
(the thesis's rules), :mod:`~occaist.data.rgba` (padding, colour correction),
:mod:`~occaist.prep.ratio_fit` (synthetic car-to-frame ratio fit), :mod:`~occaist.prep.pipeline`
(the resumable, sharded run) and :mod:`~occaist.prep.report` (manifest, rejections, figures).
See ``docs/prep.md``.
"""
