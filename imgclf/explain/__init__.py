"""Grad-CAM (Selvaraju et al., 2017): `gradcam` computes the heatmaps (imgclf/explain/gradcam.py,
where the method is described), `overlay` / `save_overlays` / `explain_files` turn them into
pictures (imgclf/explain/pictures.py)."""

from imgclf.explain.gradcam import BATCH_SIZE, find_target_layer, gradcam, validate
from imgclf.explain.pictures import COLORMAP, VIEW_SIDE, explain_files, overlay, save_overlays

__all__ = [
    "BATCH_SIZE",
    "COLORMAP",
    "VIEW_SIDE",
    "explain_files",
    "find_target_layer",
    "gradcam",
    "overlay",
    "save_overlays",
    "validate",
]
