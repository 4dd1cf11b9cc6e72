"""Image patches: a camera frame of any size -> fixed resolution -> flattened patches for the model's hMLP.

The frame is resized (antialiased bilinear) to ``size`` x ``size`` and cut into (size / patch)^2 patches of
``patch`` x ``patch`` x 3, ordered row by row; pixel values are scaled to [-1, 1]. Defaults: 80 x 80 frames,
40 x 40 patches (4 patches a frame).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

SIZE = 80
PATCH = 40


def check_frame(frame) -> np.ndarray:
    a = np.asarray(frame)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4):
        raise ValueError(f"a frame must be [H, W, 3] (RGB), [H, W, 4] or [H, W], got shape {a.shape}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"a frame must not be empty, got shape {a.shape}")
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    a = a[..., :3]
    if a.dtype != np.uint8:
        if not np.issubdtype(a.dtype, np.number) or not np.all(np.isfinite(a)):
            raise ValueError("a frame must be uint8, or finite floats in [0, 1]")
        a = (np.clip(a, 0, 1) * 255).round().astype(np.uint8)
    return a


def resize(frame, size: int = SIZE) -> np.ndarray:
    """Any [H, W, 3] frame -> [size, size, 3] uint8 (antialiased bilinear)."""
    a = torch.from_numpy(check_frame(frame)).permute(2, 0, 1)[None].float()  # [1, 3, H, W]
    a = F.interpolate(a, size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]
    return a.round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()


def to_patches(frames: torch.Tensor, patch: int = PATCH) -> torch.Tensor:
    """uint8 [..., S, S, 3] -> [..., (S / patch)^2, patch * patch * 3] float in [-1, 1], patches row by row."""
    *lead, s, s2, c = frames.shape
    if s != s2 or s % patch or c != 3:
        raise ValueError(f"frames must be [..., S, S, 3] with S a multiple of {patch}, got {tuple(frames.shape)}")
    g = s // patch
    a = frames.float().reshape(*lead, g, patch, g, patch, 3) / 127.5 - 1.0
    n = len(lead)
    a = a.permute(*range(n), n, n + 2, n + 1, n + 3, n + 4)  # [..., g, g, p, p, 3]
    return a.reshape(*lead, g * g, patch * patch * 3)


def patchify(frame, size: int = SIZE, patch: int = PATCH) -> torch.Tensor:
    """[H, W, 3] frame -> [n_patches, patch * patch * 3] float in [-1, 1]."""
    if size % patch:
        raise ValueError(f"frame size {size} is not a multiple of the patch size {patch}")
    return to_patches(torch.from_numpy(resize(frame, size)), patch)


def unpatchify(patches: torch.Tensor, size: int = SIZE, patch: int = PATCH) -> np.ndarray:
    """Inverse of ``patchify`` (after the resize): [n, p*p*3] -> [size, size, 3] uint8."""
    g = size // patch
    a = patches.reshape(g, g, patch, patch, 3).permute(0, 2, 1, 3, 4).reshape(size, size, 3)
    return ((a + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()


def n_patches(size: int = SIZE, patch: int = PATCH) -> int:
    return (size // patch) ** 2
