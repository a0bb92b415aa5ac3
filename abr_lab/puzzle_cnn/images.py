"""Image reading and tensor conversion shared by the puzzle family's data, baseline and deployment.

Every image enters as RGB ``uint8`` (h, w, 3): grey-scale images are repeated to three channels, an alpha channel is
composited onto black. Tensors fed to the network are (3, h, w) float32 normalised by the ImageNet mean and standard
deviation (what timm backbones expect, and what a local pretrained checkpoint was trained with).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def as_rgb(image: np.ndarray, name: str = "image") -> np.ndarray:
    """(h, w) grey, (h, w, 1), (h, w, 3) or (h, w, 4) of any numeric or bool dtype -> (h, w, 3) uint8."""
    array = np.asarray(image)
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    elif array.dtype != np.uint8:
        if np.issubdtype(array.dtype, np.floating) and np.nanmax(array) <= 1.0:
            array = array * 255.0
        array = np.clip(np.nan_to_num(array), 0, 255).astype(np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise ValueError(f"{name}: expected an (h, w), (h, w, 3) or (h, w, 4) image, got shape {array.shape}")
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    elif array.shape[2] == 4:
        alpha = array[:, :, 3:].astype(np.float32) / 255.0
        array = (array[:, :, :3].astype(np.float32) * alpha).round().astype(np.uint8)
    return np.ascontiguousarray(array)


def read_image(path: str | Path) -> np.ndarray:
    """An image file -> (h, w, 3) uint8 RGB; an unreadable file raises ValueError naming it."""
    import cv2

    path = Path(path)
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None or raw.size == 0:
        raise ValueError(f"{path}: not a readable image (OpenCV could not decode it)")
    if raw.ndim == 3 and raw.shape[2] == 3:
        raw = raw[:, :, ::-1]  # BGR -> RGB
    elif raw.ndim == 3 and raw.shape[2] == 4:
        raw = raw[:, :, [2, 1, 0, 3]]  # BGRA -> RGBA
    return as_rgb(raw, str(path))


def to_tensor(image: np.ndarray) -> Tensor:
    """(h, w, 3) uint8 RGB -> (3, h, w) float32, normalised by `IMAGE_MEAN` / `IMAGE_STD`."""
    array = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 255.0  # (3, h, w)
    mean = torch.tensor(IMAGE_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGE_STD).view(3, 1, 1)
    return (array - mean) / std


def to_uint8(tensor: Tensor) -> np.ndarray:
    """The inverse of `to_tensor`: (3, h, w) normalised -> (h, w, 3) uint8 RGB."""
    mean = torch.tensor(IMAGE_MEAN, device=tensor.device).view(3, 1, 1)
    std = torch.tensor(IMAGE_STD, device=tensor.device).view(3, 1, 1)
    array = (tensor.detach().float() * std + mean).clamp(0, 1) * 255.0
    return array.round().byte().permute(1, 2, 0).cpu().numpy()
