"""The keypoint shape model of the 3D-KGNN: ``W = b₀ + Σ_k β_k σ_k b_k`` (Occlusion-Net slides).

``b₀`` is the mean shape ``(14, 3)``, ``b_k`` the principal components ``(K, 14, 3)`` (unit norm
as flattened 42-vectors), ``σ_k`` their standard deviations ``(K,)``; so ``β ~ N(0, I)`` spans the
training distribution. Keypoints are in an object frame (occaist: x forward, y up, z right).

``ShapeBasis.fit`` is PCA with a left-right symmetric mean: every training shape is used together
with its mirror image (lateral coordinate negated, left/right keypoints swapped), so the mean is
exactly symmetric and each component is either symmetric or antisymmetric. Upstream instead fits
sklearn PCA on one side of ``pca_3d_cad.npy`` and mirrors it (occlusion_net.md section 7).

File format (``.npz``, loaded by ``ShapeBasis.load``): ``mean`` (14, 3), ``basis`` (K, 14, 3),
``sigma`` (K,), ``explained_variance_ratio`` (K,), all float64.
"""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from occaist.utils.io import atomic_write

__all__ = ["ShapeBasis", "mirror_keypoints"]

_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def mirror_keypoints(
    keypoints: np.ndarray, flip_permutation: Sequence[int], lateral_axis: int
) -> np.ndarray:
    """The mirror image of keypoints ``(..., J, 3)``: lateral axis negated, left/right swapped."""
    out = np.array(keypoints, dtype=np.float64)[..., list(flip_permutation), :]
    out[..., lateral_axis] *= -1.0
    return out


@dataclass(frozen=True)
class ShapeBasis:
    """Mean shape ``mean`` (J, 3), components ``basis`` (K, J, 3), deviations ``sigma`` (K,)."""

    mean: np.ndarray
    basis: np.ndarray
    sigma: np.ndarray
    explained_variance_ratio: np.ndarray

    @property
    def num_components(self) -> int:
        """K, the number of shape coefficients β."""
        return int(self.basis.shape[0])

    @classmethod
    def fit(
        cls,
        keypoints: np.ndarray,
        n_components: int,
        flip_permutation: Sequence[int],
        lateral_axis: int,
    ) -> ShapeBasis:
        """PCA of training keypoints ``(M, J, 3)`` with a left-right symmetric mean.

        ``flip_permutation`` / ``lateral_axis`` describe the mirror of the keypoint schema
        (for cars: ``occaist.data.keypoints``). ``explained_variance_ratio[k]`` is the share of
        the total variance (of the mirror-augmented set) that component k explains.

        >>> rng = np.random.default_rng(0)
        >>> base = np.zeros((14, 3))
        >>> shapes = base + rng.normal(size=(20, 1, 1)) * np.ones((14, 3))
        >>> sb = ShapeBasis.fit(shapes, 2, flip_permutation=range(14), lateral_axis=2)
        >>> sb.basis.shape, sb.sigma.shape
        ((2, 14, 3), (2,))
        """
        perm, axis = list(flip_permutation), int(lateral_axis)
        x = np.asarray(keypoints, dtype=np.float64)
        if x.ndim != 3 or x.shape[-1] != 3:
            raise ValueError(f"keypoints must have shape (M, J, 3), got {x.shape}")
        data = np.concatenate((x, mirror_keypoints(x, perm, axis)), axis=0)
        m, j = data.shape[:2]
        if not 0 < n_components <= min(m - 1, 3 * j):
            raise ValueError(f"n_components={n_components} must be in [1, {min(m - 1, 3 * j)}]")
        mean = data.mean(axis=0)
        # Exact symmetry, not just up to round-off of the mean of mirrored pairs.
        mean = 0.5 * (mean + mirror_keypoints(mean, perm, axis))
        centred = (data - mean).reshape(m, 3 * j)
        _, s, vt = np.linalg.svd(centred, full_matrices=False)
        var = s**2 / (m - 1)
        # Deterministic sign: the largest-magnitude entry of each component is positive.
        signs = np.sign(vt[np.arange(len(vt)), np.abs(vt).argmax(axis=1)])
        vt = vt * signs[:, None]
        total = var.sum()
        ratio = var / total if total > 0 else np.zeros_like(var)
        return cls(
            mean=mean,
            basis=vt[:n_components].reshape(n_components, j, 3),
            sigma=np.sqrt(var[:n_components]),
            explained_variance_ratio=ratio[:n_components],
        )

    def reconstruct(self, beta):
        """``W = mean + Σ_k β_k σ_k b_k`` ``(..., J, 3)`` for β ``(..., K)`` (numpy or torch).

        A torch β gives a torch result on β's device and dtype (the basis is converted).
        """
        if isinstance(beta, torch.Tensor):
            mean = torch.as_tensor(self.mean, dtype=beta.dtype, device=beta.device)
            basis = torch.as_tensor(self.basis, dtype=beta.dtype, device=beta.device)
            sigma = torch.as_tensor(self.sigma, dtype=beta.dtype, device=beta.device)
            return mean + torch.einsum("...k,kjc->...jc", beta * sigma, basis)
        beta = np.asarray(beta, dtype=np.float64)
        return self.mean + np.einsum("...k,kjc->...jc", beta * self.sigma, self.basis)

    def project(self, keypoints: np.ndarray) -> np.ndarray:
        """Least-squares coefficients β ``(..., K)`` of keypoints ``(..., J, 3)`` (inverse of
        ``reconstruct`` on the span of the basis)."""
        k = self.num_components
        centred = (np.asarray(keypoints, dtype=np.float64) - self.mean).reshape(
            *np.shape(keypoints)[:-2], -1
        )
        coeff = centred @ self.basis.reshape(k, -1).T
        return coeff / np.where(self.sigma > 0, self.sigma, 1.0)

    def save(self, path: str | os.PathLike) -> None:
        """Write the ``.npz`` file atomically, byte-identical for identical arrays.

        ``np.savez`` stamps the current time into the zip entries; this writes the same
        ``.npy`` members with a fixed timestamp so the file is reproducible.
        """
        arrays = {
            "mean": self.mean,
            "basis": self.basis,
            "sigma": self.sigma,
            "explained_variance_ratio": self.explained_variance_ratio,
        }

        def write(tmp: Path) -> None:
            with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
                for name, array in arrays.items():
                    buf = io.BytesIO()
                    np.lib.format.write_array(buf, np.ascontiguousarray(array, dtype=np.float64))
                    zf.writestr(
                        zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_TIME), buf.getvalue()
                    )

        atomic_write(path, write)

    @classmethod
    def load(cls, path: str | os.PathLike) -> ShapeBasis:
        """Read a ``.npz`` written by ``save`` (``explained_variance_ratio`` optional)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"shape basis {path} not found; generate the synthetic world "
                "(python -m occaist.synth) or fit one with ShapeBasis.fit(...).save(path)"
            )
        with np.load(path) as f:
            sigma = np.asarray(f["sigma"], dtype=np.float64)
            ratio = (
                np.asarray(f["explained_variance_ratio"], dtype=np.float64)
                if "explained_variance_ratio" in f
                else np.full_like(sigma, np.nan)
            )
            return cls(
                mean=np.asarray(f["mean"], dtype=np.float64),
                basis=np.asarray(f["basis"], dtype=np.float64),
                sigma=sigma,
                explained_variance_ratio=ratio,
            )
