"""`colors:` params and the columns the stage adds (their Arrow types)."""

from __future__ import annotations

from typing import Any, Literal

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, field_validator

KEY = "colors"
PAGE = "colors.html"
MASKS = "masks"
BUILTIN_PALETTES = ("basic", "fashion")

COLOR_STRUCT = pa.struct([("name", pa.string()), ("family", pa.string()), ("hex", pa.string()),
                          ("weight", pa.float64()), ("delta_e", pa.float64())])
COLOR_SCHEMA = pa.schema([
    ("colors", pa.list_(COLOR_STRUCT)),
    ("color_1", pa.string()),
    ("color_1_family", pa.string()),
    ("color_1_hex", pa.string()),
    ("color_1_weight", pa.float64()),
    ("color_method", pa.string()),
    ("color_foreground", pa.float64()),
    ("color_mask", pa.string()),
    ("color_error", pa.string()),
])
COLOR_COLUMNS = COLOR_SCHEMA.names


class ColorsParams(BaseModel):
    """params.yaml `colors:`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    foreground: Literal["auto", "grabcut", "border", "none"] = Field(
        "auto", description="auto: border when the border is uniform, else grabcut")
    margin: float = Field(0.05, ge=0.0, le=0.4, description="share of each side: padding of the first-pass box; the centred rectangle's inset")
    grabcut_iterations: int = Field(3, ge=1, le=20)
    border_width: float = Field(0.04, gt=0.0, le=0.25, description="border band, share of the shorter side")
    border_threshold: float = Field(14.0, gt=0.0, le=100.0, description="CIELAB distance from the background beyond which a pixel is product")
    border_tolerance: float = Field(8.0, gt=0.0, le=100.0, description="CIELAB distance within which a border pixel matches the border colour")
    border_uniformity: float = Field(0.9, ge=0.0, le=1.0, description="auto: share of border pixels matching the border colour to use `border`")
    erode: int = Field(1, ge=0, le=10, description="mask pixels (working size) left out at the product's edge")
    min_foreground: float = Field(0.03, ge=0.0, le=1.0, description="a smaller mask is not trusted (centred rectangle instead)")
    work_size: int = Field(160, ge=32, le=2048, description="longest side the foreground is computed at")
    sample: int = Field(3000, ge=50, le=1_000_000, description="foreground pixels clustered per image")
    k: int = Field(6, ge=1, le=32, description="k-means clusters before merging")
    merge_delta_e: float = Field(9.0, ge=0.0, le=100.0, description="merge clusters closer than this CIEDE2000 difference")
    palette: str = Field("basic", description="basic | fashion | a CSV file name,r,g,b[,family]")
    max_colors: int = Field(3, ge=1, le=16, description="colours kept per image")
    min_weight: float = Field(0.05, ge=0.0, le=1.0, description="lighter colours are dropped (the dominant one always stays)")
    masks: bool = Field(False, description="write the foreground masks to OUT/masks/")
    seed: int = Field(0, ge=0)
    workers: int = Field(0, ge=0, le=256, description="processes; 0 = one per core")
    page_images: int = Field(120, ge=0, le=100_000, description="images shown on OUT/colors.html")

    @field_validator("palette")
    @classmethod
    def _palette(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("empty: use basic, fashion or a CSV file name,r,g,b[,family]")
        if v not in BUILTIN_PALETTES and not v.lower().endswith(".csv"):
            raise ValueError(f"use basic, fashion or a path to a .csv file (got {v!r})")
        return v


def parse_colors(data: dict[str, Any] | None, prefix: str = KEY) -> ColorsParams:
    """Validate a `colors:` mapping; any error is a ParamsError naming `colors.<key>`."""
    from datakit.params import parse_section

    return parse_section(ColorsParams, data, prefix)
