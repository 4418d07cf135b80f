"""Options of the `synthetic` provider (`scrape.providers.synthetic.options` in params.yaml):
their defaults and their validation. What each option means is in `datakit.scrape.providers.synthetic`."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from datakit.errors import ParamsError

MIME_BY_FORMAT: dict[str, str] = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp"}

DEFAULT_OPTIONS: dict[str, Any] = {
    "exact_dup": 0.05,
    "near_dup": 0.10,
    "cross_query": 0.03,
    "broken": 0.03,
    "wrong_item": 0.0,
    "min_fraction": 0.55,
    "size": 320,
    "formats": {"jpeg": 0.85, "png": 0.10, "webp": 0.05},
    "license_mix": None,
}
"""Option keys accepted in `settings.options`, with their defaults."""

# Licences `license_mix` may draw: Openverse's codes -> (name, URL); "none" is a result without any
# licence information, as Brave and Bing return.
LICENCE_CODES: dict[str, tuple[str | None, str | None]] = {
    "cc0": ("CC0 1.0", "https://creativecommons.org/publicdomain/zero/1.0/"),
    "pdm": ("Public Domain Mark 1.0", "https://creativecommons.org/publicdomain/mark/1.0/"),
    "by": ("CC BY 4.0", "https://creativecommons.org/licenses/by/4.0/"),
    "by-sa": ("CC BY-SA 4.0", "https://creativecommons.org/licenses/by-sa/4.0/"),
    "by-nc": ("CC BY-NC 4.0", "https://creativecommons.org/licenses/by-nc/4.0/"),
    "by-nc-sa": ("CC BY-NC-SA 4.0", "https://creativecommons.org/licenses/by-nc-sa/4.0/"),
    "by-nd": ("CC BY-ND 4.0", "https://creativecommons.org/licenses/by-nd/4.0/"),
    "by-nc-nd": ("CC BY-NC-ND 4.0", "https://creativecommons.org/licenses/by-nc-nd/4.0/"),
    "none": (None, None),
}

SHARES = ("exact_dup", "near_dup", "cross_query", "broken", "wrong_item")  # the kinds of messy result, as shares of a list



@dataclass(frozen=True)
class SyntheticOptions:
    """Validated provider options (see the module docstring for their meaning)."""

    exact_dup: float = 0.05
    near_dup: float = 0.10
    cross_query: float = 0.03
    broken: float = 0.03
    wrong_item: float = 0.0
    min_fraction: float = 0.55
    size: int = 320
    formats: tuple[tuple[str, float], ...] = (("jpeg", 0.85), ("png", 0.10), ("webp", 0.05))
    license_mix: tuple[tuple[str, float], ...] = ()  # empty: every result is CC0 (the constant)

    @classmethod
    def parse(cls, options: Mapping[str, Any] | None) -> SyntheticOptions:
        """Validate `settings.options` and fill in defaults.

        Args:
            options: the provider's options mapping (may be None or empty).

        Returns:
            The validated options.

        Raises:
            ParamsError: an unknown key or a bad value; the message names the key.
        """
        where = "scrape.providers.synthetic.options"
        options = dict(options or {})
        allowed = ", ".join(sorted(DEFAULT_OPTIONS))
        for key in options:
            if key not in DEFAULT_OPTIONS:
                raise ParamsError(f"{where}: unknown key {key!r} (allowed: {allowed})")
        values: dict[str, Any] = {}
        for key in SHARES + ("min_fraction",):
            value = options.get(key, DEFAULT_OPTIONS[key])
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ParamsError(f"{where}.{key}: expected a number between 0 and 1, got {value!r}")
            low_ok = value > 0 if key == "min_fraction" else value >= 0
            if not low_ok or value > 1:
                bound = "0 < x <= 1" if key == "min_fraction" else "0 <= x <= 1"
                raise ParamsError(f"{where}.{key}: expected {bound}, got {value!r}")
            values[key] = float(value)
        total = sum(values[k] for k in SHARES)
        if total > 0.9:
            raise ParamsError(
                f"{where}: exact_dup + near_dup + cross_query + broken + wrong_item must be <= 0.9, got {total:g}"
            )
        size = options.get("size", DEFAULT_OPTIONS["size"])
        if isinstance(size, bool) or not isinstance(size, int) or not 16 <= size <= 4096:
            raise ParamsError(f"{where}.size: expected an integer between 16 and 4096, got {size!r}")
        formats = options.get("formats", DEFAULT_OPTIONS["formats"])
        if not isinstance(formats, Mapping) or not formats:
            raise ParamsError(
                f"{where}.formats: expected a mapping of format to weight with keys among "
                f"{', '.join(MIME_BY_FORMAT)}, got {formats!r}"
            )
        weights: list[tuple[str, float]] = []
        for name, weight in formats.items():
            fmt = str(name).lower()
            fmt = "jpeg" if fmt == "jpg" else fmt
            if fmt not in MIME_BY_FORMAT:
                raise ParamsError(
                    f"{where}.formats: unknown format {name!r} (allowed: {', '.join(MIME_BY_FORMAT)})"
                )
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not (
                math.isfinite(weight) and weight >= 0
            ):
                raise ParamsError(f"{where}.formats.{name}: expected a weight >= 0, got {weight!r}")
            weights.append((fmt, float(weight)))
        if sum(w for _, w in weights) <= 0:
            raise ParamsError(f"{where}.formats: at least one weight must be > 0")
        return cls(size=size, formats=tuple(weights), license_mix=_license_mix(options.get("license_mix"), where),
                   **values)


def _license_mix(mix: Any, where: str) -> tuple[tuple[str, float], ...]:
    """`license_mix`: None (every result CC0) or a mapping of licence code to weight."""
    if mix is None:
        return ()
    codes = ", ".join(LICENCE_CODES)
    if not isinstance(mix, Mapping) or not mix:
        raise ParamsError(f"{where}.license_mix: expected a mapping of licence code to weight with keys among "
                          f"{codes}, got {mix!r}")
    weights: list[tuple[str, float]] = []
    for name, weight in mix.items():
        code = str(name).strip().lower()
        if code not in LICENCE_CODES:
            raise ParamsError(f"{where}.license_mix: unknown licence code {name!r} (allowed: {codes})")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not (
            math.isfinite(weight) and weight >= 0
        ):
            raise ParamsError(f"{where}.license_mix.{name}: expected a weight >= 0, got {weight!r}")
        weights.append((code, float(weight)))
    if sum(w for _, w in weights) <= 0:
        raise ParamsError(f"{where}.license_mix: at least one weight must be > 0")
    return tuple(weights)
