"""Scenes of posed cars seen by a pinhole camera: G-buffer and exact keypoint annotations.

World frame: y up, ground plane ``y = 0`` (for the single-car DPC views the world is the car's
object frame). A car instance places its normalised mesh with ``X = s·R·x + T``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from occaist.geometry.camera import DPC_AXES_TO_OPENCV
from occaist.synth.cars import CarMesh
from occaist.synth.raster import PinholeCamera, rasterize, visible_points


@dataclass(frozen=True)
class CarInstance:
    """A car mesh placed in the world: ``X = scale·rotation·x + translation``.

    ``paint`` is the instance's body colour (linear RGB in [0, 1]); ``seed`` drives per-instance
    texture noise.
    """

    mesh: CarMesh
    scale: float
    rotation: np.ndarray
    translation: np.ndarray
    paint: np.ndarray
    seed: int = 0

    def to_world(self, points: np.ndarray) -> np.ndarray:
        """Object ``(..., 3)`` to world ``(..., 3)``."""
        return self.scale * points @ self.rotation.T + self.translation

    def to_object(self, points: np.ndarray) -> np.ndarray:
        """World ``(..., 3)`` to object ``(..., 3)``."""
        return (points - self.translation) @ self.rotation / self.scale

    @property
    def keypoints_world(self) -> np.ndarray:
        """``(14, 3)`` keypoints in the world."""
        return self.to_world(self.mesh.keypoints)


def yaw_rotation(yaw: float) -> np.ndarray:
    """Rotation by ``yaw`` radians about the world up axis y (right-hand rule)."""
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def dpc_rotation(camera: PinholeCamera, instance: CarInstance) -> np.ndarray:
    """``R_q = C·R_cam·R_inst``: the DPC-convention rotation under which the camera sees the car.

    ``C`` maps DPC camera axes (depth, up, right) to OpenCV axes; for a car centred in view this
    is exactly ``quaternion_from_campos`` of the camera position in the car's frame.
    """
    C = np.asarray(DPC_AXES_TO_OPENCV)
    return C @ camera.R @ instance.rotation


def object_campos(camera: PinholeCamera, instance: CarInstance) -> np.ndarray:
    """The camera position in the car's frame, as the Blender (z-up) ``pos`` DPC stores.

    The y-up object frame maps to Blender's frame as ``(X, Y, Z) = (x, −z, y)``.
    """
    c = instance.to_object(camera.eye)
    return np.array([c[0], -c[2], c[1]])


@dataclass
class GBuffer:
    """Per-sample geometry of a rendered scene (``(H, W)`` at the rendered resolution).

    ``face`` indexes the scene's concatenated faces (-1 = background), ``instance`` the
    instances, ``material`` ``occaist.synth.cars.MATERIALS``; ``face_normals`` ``(F, 3)`` are
    world-frame outward normals of all scene faces.
    """

    face: np.ndarray
    depth: np.ndarray
    instance: np.ndarray
    material: np.ndarray
    face_normals: np.ndarray
    camera: PinholeCamera

    @property
    def mask(self) -> np.ndarray:
        return self.face >= 0

    def normals(self, mask: np.ndarray) -> np.ndarray:
        """World normals ``(N, 3)`` of the faces seen at the ``mask`` pixels (all foreground)."""
        return self.face_normals[self.face[mask]]

    def rays(self, mask: np.ndarray) -> np.ndarray:
        """Unit world directions ``(N, 3)`` from the eye through the ``mask`` pixels' centres."""
        rows, cols = np.nonzero(mask)
        pix = np.column_stack((cols + 0.5, rows + 0.5, np.ones(len(rows))))
        d = pix @ np.linalg.inv(self.camera.K).T @ self.camera.R
        return d / np.linalg.norm(d, axis=1, keepdims=True)


def _scene_triangles(instances: list[CarInstance]) -> tuple[np.ndarray, ...]:
    tris, normals, inst, mat = [], [], [], []
    for k, car in enumerate(instances):
        tris.append(car.to_world(car.mesh.triangles))
        normals.append(car.mesh.face_normals @ car.rotation.T)
        inst.append(np.full(len(car.mesh.faces), k, dtype=np.int32))
        mat.append(car.mesh.face_material)
    return np.concatenate(tris), np.concatenate(normals), np.concatenate(inst), np.concatenate(mat)


def render_gbuffer(camera: PinholeCamera, instances: list[CarInstance]) -> GBuffer:
    """Rasterise the instances (back faces culled: every part is a closed convex solid)."""
    tri, normal, inst, mat = _scene_triangles(instances)
    facing = np.einsum("fc,fc->f", normal, tri.mean(axis=1) - camera.eye) < 0
    sel = np.flatnonzero(facing)
    xy, z = camera.project(tri[sel])
    face, depth = rasterize(xy, z, camera.height, camera.width)
    face = np.where(face >= 0, sel[np.maximum(face, 0)], -1)
    fg = face >= 0
    safe = np.maximum(face, 0)
    return GBuffer(
        face=face,
        depth=depth,
        instance=np.where(fg, inst[safe], -1),
        material=np.where(fg, mat[safe], -1),
        face_normals=normal,
        camera=camera,
    )


def keypoint_annotations(
    camera: PinholeCamera, instances: list[CarInstance]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Projected keypoints ``(I, 14, 2)``, depths ``(I, 14)``, in-image ``(I, 14)`` and visibility
    ``(I, 14)`` (in the image and unoccluded by any car, exactly) for every instance."""
    tri, _, _, _ = _scene_triangles(instances)
    tri_cam = camera.to_camera(tri)
    kp = np.stack([car.keypoints_world for car in instances])  # (I, 14, 3)
    xy, depth = camera.project(kp)
    inside = (
        (depth > 0)
        & (xy[..., 0] >= 0)
        & (xy[..., 0] < camera.width)
        & (xy[..., 1] >= 0)
        & (xy[..., 1] < camera.height)
    )
    unoccluded = visible_points(camera.to_camera(kp.reshape(-1, 3)), tri_cam).reshape(depth.shape)
    return xy, depth, inside, inside & unoccluded
