"""Predict on your own images with a trained model: images in, the field's result files and
pictures out (``python predict.py``, ``python -m occaist.predict``; see docs/predict.md).

One runner (:func:`predict`) lists and decodes the inputs and dispatches to the predictor of the
configured model, which calls that LightningModule's own ``predict_step`` and writes:

* point-cloud model (DPC): ``clouds/<key>.ply``, ``poses/<key>.json``, ``overlays/<key>.png``
  (rendered silhouette), ``turntables/<key>.gif``;
* Occlusion-Net: ``keypoints_results.json`` (COCO keypoint results) with ``images.json`` (the
  image list pycocotools' ``loadRes`` needs), ``overlays/<key>.png``;
* pose regression: ``results_bop.csv`` (BOP results), ``overlays/<key>.png`` (mesh silhouette);
* AIST: ``stylized/<key>.png`` (RGBA, the input's alpha kept), ``overlays/<key>.png``
  (input | stylised);

and ``summary.json`` (counts, unreadable files and why, result files) for every model.
Names are imported on first use, so ``predict.py --help`` starts without torch.
"""

from occaist._lazy import lazy_getattr

__all__ = ["DecodedInput", "InputFile", "decode_rgba", "list_inputs", "predict", "resolve_device"]
__getattr__ = lazy_getattr(
    __name__,
    {
        "DecodedInput": "occaist.predict.inputs",
        "InputFile": "occaist.predict.inputs",
        "decode_rgba": "occaist.predict.inputs",
        "list_inputs": "occaist.predict.inputs",
        "predict": "occaist.predict.run",
        "resolve_device": "occaist.predict.run",
    },
)
