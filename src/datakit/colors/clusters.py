"""Clusters and names: k-means in CIELAB, merging by CIEDE2000, naming against a palette."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from datakit.colors.palette import Palette
from datakit.colors.science import ciede2000, to_hex


@dataclass
class Clusters:
    """Colour clusters of one image: CIELAB and sRGB means, and weights (share of the pixels)."""

    lab: np.ndarray  # (n, 3)
    rgb: np.ndarray  # (n, 3) float
    weight: np.ndarray  # (n,)


def kmeans(lab: np.ndarray, rgb: np.ndarray, k: int, seed: int) -> Clusters:
    """k-means (OpenCV, k-means++ seeding, seeded) on CIELAB samples; empty clusters dropped."""
    import cv2

    n = len(lab)
    k = max(1, min(k, n))
    cv2.setRNGSeed(seed)
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 30, 0.2)
    _, labels, _ = cv2.kmeans(lab.astype(np.float32), k, None, criteria, 2, cv2.KMEANS_PP_CENTERS)
    labels = labels.ravel()
    counts = np.bincount(labels, minlength=k).astype(np.float64)
    used = counts > 0
    lab_sum = np.zeros((k, 3))
    rgb_sum = np.zeros((k, 3))
    np.add.at(lab_sum, labels, lab)
    np.add.at(rgb_sum, labels, rgb)
    return Clusters(lab_sum[used] / counts[used, None], rgb_sum[used] / counts[used, None], counts[used] / n)


def _combine(c: Clusters, i: int, j: int) -> Clusters:
    """Clusters i and j as one (weighted means of their centres), j removed."""
    wi, wj = c.weight[i], c.weight[j]
    w = wi + wj
    lab, rgb, weight = c.lab.copy(), c.rgb.copy(), c.weight.copy()
    lab[i] = (wi * lab[i] + wj * lab[j]) / w
    rgb[i] = (wi * rgb[i] + wj * rgb[j]) / w
    weight[i] = w
    keep = np.arange(len(weight)) != j
    return Clusters(lab[keep], rgb[keep], weight[keep])


def merge_clusters(c: Clusters, threshold: float) -> Clusters:
    """Merge the closest pair (CIEDE2000) while it is closer than `threshold`."""
    while len(c.weight) > 1:
        d = ciede2000(c.lab[:, None, :], c.lab[None, :, :])
        np.fill_diagonal(d, np.inf)
        i, j = np.unravel_index(int(np.argmin(d)), d.shape)
        if d[i, j] >= threshold:
            break
        c = _combine(c, int(min(i, j)), int(max(i, j)))
    return c


def name_clusters(c: Clusters, palette: Palette, *, max_colors: int, min_weight: float) -> list[dict[str, Any]]:
    """Name each cluster, combine clusters sharing a name, keep the heaviest `max_colors`
    (dropping those under `min_weight`, except the heaviest)."""
    idx, _ = palette.nearest(c.lab)
    groups: dict[int, list[int]] = {}
    for row, k in enumerate(idx):
        groups.setdefault(int(k), []).append(row)
    named = []
    for k, rows in groups.items():
        w = c.weight[rows]
        total = float(w.sum())
        lab = (c.lab[rows] * w[:, None]).sum(axis=0) / total
        rgb = (c.rgb[rows] * w[:, None]).sum(axis=0) / total
        named.append({"name": palette.names[k], "family": palette.families[k], "hex": to_hex(rgb),
                      "weight": round(total, 4), "delta_e": round(float(ciede2000(lab, palette.lab[k])), 2)})
    named.sort(key=lambda d: (-d["weight"], d["name"]))
    kept = [d for n, d in enumerate(named) if n == 0 or d["weight"] >= min_weight]
    return kept[:max_colors]
