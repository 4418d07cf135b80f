"""Colour science: sRGB to CIELAB and the CIEDE2000 difference, vectorised with NumPy."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# sRGB (D65) to CIE XYZ, and the D65 reference white.
_RGB_TO_XYZ = np.array([[0.4124564, 0.3575761, 0.1804375],
                        [0.2126729, 0.7151522, 0.0721750],
                        [0.0193339, 0.1191920, 0.9503041]])
_WHITE = np.array([0.95047, 1.0, 1.08883])
_EPS = (6.0 / 29.0) ** 3


def _linear_table() -> np.ndarray:
    c = np.arange(256) / 255.0
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


_LINEAR = _linear_table()


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """CIELAB (D65, 2 degree observer) of sRGB colours.

    Args:
        rgb: (..., 3) array, uint8 or floats in 0..255.

    Returns:
        (..., 3) float64 array of L*, a*, b*.
    """
    rgb = np.asarray(rgb)
    if rgb.dtype == np.uint8:
        lin = _LINEAR[rgb]
    else:
        c = np.clip(rgb.astype(np.float64) / 255.0, 0.0, 1.0)
        lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = (lin @ _RGB_TO_XYZ.T) / _WHITE
    f = np.where(xyz > _EPS, np.cbrt(xyz), xyz / (3 * (6.0 / 29.0) ** 2) + 4.0 / 29.0)
    out = np.empty(f.shape, dtype=np.float64)
    out[..., 0] = 116.0 * f[..., 1] - 16.0
    out[..., 1] = 500.0 * (f[..., 0] - f[..., 1])
    out[..., 2] = 200.0 * (f[..., 1] - f[..., 2])
    return out


def ciede2000(lab1: np.ndarray, lab2: np.ndarray) -> np.ndarray:
    """CIEDE2000 colour difference (kL = kC = kH = 1), broadcasting over leading axes.

    Written from the formula in Sharma, Wu & Dalal, "The CIEDE2000 color-difference formula:
    implementation notes, supplementary test data, and mathematical observations" (2005),
    including its conventions for hue when a chroma is zero.

    Args:
        lab1: (..., 3) CIELAB colours.
        lab2: (..., 3) CIELAB colours, broadcastable against `lab1`.

    Returns:
        The differences, shape of the broadcast leading axes.
    """
    lab1 = np.asarray(lab1, dtype=np.float64)
    lab2 = np.asarray(lab2, dtype=np.float64)
    L1, a1, b1 = lab1[..., 0], lab1[..., 1], lab1[..., 2]
    L2, a2, b2 = lab2[..., 0], lab2[..., 1], lab2[..., 2]
    pow25_7 = 25.0 ** 7

    # a* is stretched near the neutral axis so that greys are not over-separated in hue
    chroma_mean = (np.hypot(a1, b1) + np.hypot(a2, b2)) / 2.0
    c7 = chroma_mean ** 7
    g = 0.5 * (1.0 - np.sqrt(c7 / (c7 + pow25_7)))
    a1p, a2p = a1 * (1.0 + g), a2 * (1.0 + g)
    c1p, c2p = np.hypot(a1p, b1), np.hypot(a2p, b2)
    # hue angles in degrees, 0..360; 0 by convention for a neutral colour
    h1p = np.where((a1p == 0) & (b1 == 0), 0.0, np.degrees(np.arctan2(b1, a1p)) % 360.0)
    h2p = np.where((a2p == 0) & (b2 == 0), 0.0, np.degrees(np.arctan2(b2, a2p)) % 360.0)

    neutral = (c1p * c2p) == 0
    dL = L2 - L1
    dC = c2p - c1p
    dh = h2p - h1p
    dh = np.where(dh > 180.0, dh - 360.0, np.where(dh < -180.0, dh + 360.0, dh))
    dh = np.where(neutral, 0.0, dh)
    dH = 2.0 * np.sqrt(c1p * c2p) * np.sin(np.radians(dh) / 2.0)

    L_mean = (L1 + L2) / 2.0
    C_mean = (c1p + c2p) / 2.0
    h_sum = h1p + h2p
    far = np.abs(h1p - h2p) > 180.0
    h_mean = np.where(far, np.where(h_sum < 360.0, (h_sum + 360.0) / 2.0, (h_sum - 360.0) / 2.0), h_sum / 2.0)
    h_mean = np.where(neutral, h_sum, h_mean)

    t = (1.0 - 0.17 * np.cos(np.radians(h_mean - 30.0)) + 0.24 * np.cos(np.radians(2.0 * h_mean))
         + 0.32 * np.cos(np.radians(3.0 * h_mean + 6.0)) - 0.20 * np.cos(np.radians(4.0 * h_mean - 63.0)))
    d_theta = 30.0 * np.exp(-(((h_mean - 275.0) / 25.0) ** 2))
    cm7 = C_mean ** 7
    r_c = 2.0 * np.sqrt(cm7 / (cm7 + pow25_7))
    l50 = (L_mean - 50.0) ** 2
    s_l = 1.0 + 0.015 * l50 / np.sqrt(20.0 + l50)
    s_c = 1.0 + 0.045 * C_mean
    s_h = 1.0 + 0.015 * C_mean * t
    r_t = -np.sin(np.radians(2.0 * d_theta)) * r_c
    tl, tc, th = dL / s_l, dC / s_c, dH / s_h
    return np.sqrt(np.maximum(tl * tl + tc * tc + th * th + r_t * tc * th, 0.0))


def to_hex(rgb: Sequence[float]) -> str:
    r, g, b = (int(min(255, max(0, round(float(c))))) for c in rgb)
    return f"#{r:02x}{g:02x}{b:02x}"
