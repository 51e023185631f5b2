"""Point-cloud model (DPC): a PLY cloud and a pose JSON per image, a silhouette overlay and a
turntable of the cloud.

Each image is composited on white (as the renders the model learned from), padded to a centred
square with white and resized to the training size. The DPC camera sees the whole square, so the
rendered silhouette is resized to the square and cropped back onto the image for the overlay.
"""

from __future__ import annotations

import functools
import math
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image

from occaist.geometry.quaternion import quaternion_from_axis_angle, quaternion_multiply
from occaist.geometry.quaternion import quaternion_to_rotation_matrix as rotation_matrix
from occaist.predict.base import Predictor, SquareFrame, resize_float
from occaist.predict.inputs import DecodedInput
from occaist.predict.overlays import rgb_of, tint
from occaist.predict.writers import output_path, write_ply, write_png
from occaist.utils.io import atomic_write, write_json_atomic

#: Turntable: frames per turn, side of each frame in pixels, milliseconds per frame.
TURNTABLE_FRAMES = 12
TURNTABLE_SIDE = 128
TURNTABLE_FRAME_MS = 120


def prepare_on_white(rgba: np.ndarray, size: int) -> tuple[torch.Tensor, dict[str, Any]]:
    """``(3, size, size)`` float in [0, 1]: ``rgba`` on white, centred in a white square; the
    meta holds the ``frame`` and the alpha, padded and resized the same way (``mask``,
    ``(1, size, size)``; used when the file had an alpha channel of its own)."""
    frame = SquareFrame(*rgba.shape[:2])
    square = frame.pad(rgb_of(rgba), fill=255)
    image = Image.fromarray(square).resize((size, size), Image.Resampling.BICUBIC)
    tensor = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float() / 255.0
    alpha = Image.fromarray(frame.pad(rgba[..., 3:4], fill=0)[..., 0])
    alpha = alpha.resize((size, size), Image.Resampling.BILINEAR)
    mask = torch.from_numpy(np.asarray(alpha).copy())[None].float() / 255.0
    return tensor, {"frame": frame, "mask": mask}


class PointCloudPredictor(Predictor):
    """Predictions of :class:`~occaist.models.PointCloudPoseNet` (module docstring)."""

    module_class: ClassVar[str] = "occaist.models.dpc.module.PointCloudPoseNet"
    name: ClassVar[str] = "point_cloud"

    def prepare_fn(self):
        return functools.partial(prepare_on_white, size=int(self.model.net.image_size))

    def collate(self, items: list[DecodedInput]) -> dict[str, torch.Tensor]:
        """The images, and their alpha when every file of the batch had one (a model with
        ``test_pose=silhouette_fit`` fits it; otherwise its student gives the pose)."""
        batch = {"image": torch.stack([item.tensor for item in items]).to(self.device)}
        if all(item.has_alpha for item in items):
            batch["mask"] = torch.stack([item.meta["mask"] for item in items]).to(self.device)
        return batch

    def write(self, item: DecodedInput, result: dict[str, torch.Tensor]) -> None:
        key = item.file.key
        points = result["points"].float().cpu().numpy()
        write_ply(output_path(self.output, "clouds", key, ".ply"), points)
        record: dict[str, Any] = {
            "image": str(item.file.path),
            "num_points": len(points),
            "occupancy_scale": float(result["scale"]),
            "frame": "the model's canonical frame after the global alignment (y up)",
        }
        if "pose" in result:
            pose = result["pose"].float().cpu()
            record.update(
                quaternion_wxyz=[round(float(v), 6) for v in pose],
                rotation_matrix=rotation_matrix(pose.double()).numpy().round(6).tolist(),
                pose_source=result["pose_source"],
                convention="p_camera = R p_object, camera axes (depth, up, right); the DPC "
                "camera sits at depth -2.0 with focal length 1.875 image widths",
            )
        write_json_atomic(output_path(self.output, "poses", key, ".json"), record)
        if self.save_overlays and "silhouette" in result:
            frame: SquareFrame = item.meta["frame"]
            silhouette = result["silhouette"].float().cpu().numpy()
            mask = frame.crop(resize_float(silhouette, (frame.side, frame.side)))
            write_png(output_path(self.output, "overlays", key, ".png"), tint(item.rgba, mask))
            frames = self.turntable(result["points"], result["pose"], result["scale"])
            self._write_gif(output_path(self.output, "turntables", key, ".gif"), frames)

    @torch.no_grad()
    def turntable(
        self, points: torch.Tensor, pose: torch.Tensor, scale: torch.Tensor
    ) -> list[np.ndarray]:
        """The cloud seen from the predicted pose while it turns about its up axis (y): one
        ``(side, side)`` uint8 frame (dark cloud on white) per step of the turn."""
        angles = torch.arange(TURNTABLE_FRAMES, device=points.device) * (
            2 * math.pi / TURNTABLE_FRAMES
        )
        up = points.new_tensor([0.0, 1.0, 0.0]).expand(TURNTABLE_FRAMES, 3)
        spin = quaternion_from_axis_angle(up, angles)  # (F, 4)
        quats = quaternion_multiply(pose.expand_as(spin), spin)
        clouds = points.expand(TURNTABLE_FRAMES, -1, -1)
        scales = scale.expand(TURNTABLE_FRAMES)
        silhouettes = self.model.render(clouds, quats, scales, self.model.hparams.eval_sigma)
        grey = (255 * (1.0 - silhouettes["silhouette"].clamp(0, 1))).round().byte().cpu().numpy()
        side, bilinear = (TURNTABLE_SIDE, TURNTABLE_SIDE), Image.Resampling.BILINEAR
        return [np.asarray(Image.fromarray(g).resize(side, bilinear)) for g in grey]

    @staticmethod
    def _write_gif(path, frames: list[np.ndarray]) -> None:
        images = [Image.fromarray(f) for f in frames]

        def save(tmp):
            images[0].save(
                tmp,
                format="GIF",
                save_all=True,
                append_images=images[1:],
                duration=TURNTABLE_FRAME_MS,
                loop=0,
            )

        atomic_write(path, save)
