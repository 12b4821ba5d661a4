"""The frozen-encoder features of rendered samples, cached across epochs, and their keys.

PointAD's CLIP encoder is frozen, so the features of a sample's renders do not change while the
prompts learn: they are computed once and reused (only rasterisation, for the correspondence and
the masks, and the cheap text / similarity part run again). A key names everything the features
depend on: the sample file, its size and coordinates, the splat radius used, and the render and
encoder settings (:func:`settings_key`), so a changed setting can never hit a stale entry.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import torch
from torch import Tensor


class FeatureCache:
    """Frozen-encoder features of rendered samples, reused across epochs.

    Entries are ``(global (V, D), patches (L, V, h*w, D))`` tensors stored exactly as the encoder
    produced them (no dtype change), so a hit returns the very same numbers. A byte budget caps the
    memory; when full, the least recently used entries are evicted.

    Args:
        max_bytes: budget (``0`` disables the cache).
        device: where entries live (``None`` = where they were computed).
    """

    def __init__(self, max_bytes: int = 8 * 2**30, device: str | torch.device | None = "cpu") -> None:
        self.max_bytes = int(max_bytes)
        self.device = None if device is None else torch.device(device)
        self._entries: OrderedDict[str, tuple[Tensor, Tensor]] = OrderedDict()
        self.bytes = 0
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    @staticmethod
    def _size(entry: tuple[Tensor, Tensor]) -> int:
        return sum(t.numel() * t.element_size() for t in entry)

    def get(self, key: str | None) -> tuple[Tensor, Tensor] | None:
        """The entry of ``key`` (moved to most recently used), or ``None``."""
        if key is None or key not in self._entries:
            self.misses += key is not None
            return None
        self.hits += 1
        self._entries.move_to_end(key)
        return self._entries[key]

    def put(self, key: str | None, global_features: Tensor, patch_tokens: Tensor) -> bool:
        """Store an entry; returns whether it was stored (``False`` if it alone exceeds the budget)."""
        if key is None or self.max_bytes <= 0:
            return False
        entry = tuple(t.detach().to(self.device) if self.device is not None else t.detach()
                      for t in (global_features, patch_tokens))
        size = self._size(entry)
        if size > self.max_bytes:
            return False
        if key in self._entries:
            self.bytes -= self._size(self._entries.pop(key))
        while self.bytes + size > self.max_bytes and self._entries:
            _, old = self._entries.popitem(last=False)
            self.bytes -= self._size(old)
        self._entries[key] = entry
        self.bytes += size
        return True

    def clear(self) -> None:
        """Drop every entry."""
        self._entries.clear()
        self.bytes = 0


def settings_key(backbone: object, settings: object, rig: object, render_size: tuple[int, int]) -> str:
    """Everything the frozen features of a render depend on but the cloud and its radius.

    Args:
        backbone: the frozen encoder (its name, weights, layers, V-V start and precision count).
        settings: the :class:`~anomalib_3d_plugins.pointad.render_settings.RenderSettings`.
        rig: the camera rig the cloud is seen by (its rotations and camera count).
        render_size: ``(H, W)`` of the renders.
    """
    b, r = backbone, settings
    camera = (rig.projection, rig.fov_deg, rig.margin, rig.framing, rig.zoom, rig.recede_step, rig.window_size)
    parts = (b.model_name, getattr(b, "weights_id", ""), b.feature_layers, b.vv_start_layer, b.precision,
             rig.rotations.flatten().tolist(), camera, r.projection, render_size, r.shading, r.use_colors,
             r.depth_tolerance, r.style, r.point_size_px)
    return hashlib.sha1(repr(parts).encode()).hexdigest()[:16]


def sample_key(path: str | None, points: Tensor, radius: float, settings: str) -> str | None:
    """Cache key of one cloud: its file, size, a coordinate checksum, the splat radius actually
    used, the :func:`settings_key` and the device type; ``None`` (not cached) without a file.

    Args:
        path: the sample file.
        points: ``(N, 3)`` the cloud as rendered.
        radius: its splat radius in pixels.
        settings: :func:`settings_key` of the rig it is seen by.
    """
    if path is None:
        return None
    checksum = points.detach().double().sum(dim=0).tolist()
    coordinates = ",".join(f"{value:.9e}" for value in checksum)
    return f"{path}|{points.shape[0]}|{coordinates}|r={float(radius):.6g}|{settings}|{points.device.type}"


__all__ = ["FeatureCache", "sample_key", "settings_key"]
