"""The colors stage: the dominant colours of each image's product, named against a palette.

`run(manifest, ColorsParams, ctx) -> StageResult` (`stage.py`). The package, one concern per
module: `params` (params and column types), `science` (CIELAB, CIEDE2000), `palette`,
`foreground`, `clusters` (k-means, merging, naming), `analyse` (one picture; many files in a
process pool), `page` (colors.html), `stage` (the manifest in, the manifest out).

Catalogue colour labels are inconsistent ("salmon", "light-red", "RD") or missing. This stage
needs no training set. Per image, pure and seeded (house style 6, 7):

1. **Foreground.** The product is separated from its background at a small working size
   (`colors.work_size`). `border`: pixels far (CIELAB distance) from the median border colour are
   the product; holes are filled, so a pattern that shares the background's colour stays. It is
   fast and right for plain backgrounds. `grabcut`: a first pass models the border with a few
   colours and boxes whatever differs from them; that box, padded by `colors.margin`, or the
   centred rectangle inside `margin` when the pass finds nothing, initialises OpenCV's GrabCut.
   `auto` (the default) picks `border` when the border is uniform, else `grabcut`. `none` keeps
   every pixel. A mask covering less than `colors.min_foreground` of the picture is not trusted:
   the centred rectangle is used instead (`color_method` ends in `+center`).
2. **Clusters.** Up to `colors.sample` product pixels, a seeded sample drawn at full resolution
   under the mask less its outer `colors.erode` pixels (downsizing would blend thin stripes into
   colours the product does not have; edges are anti-aliased), go through k-means in CIELAB
   (`colors.k` clusters, OpenCV, seeded); clusters closer than `colors.merge_delta_e` (CIEDE2000)
   are merged closest pair first, the merged centre being the weighted mean of the two.
3. **Names.** Each cluster takes the nearest palette colour by CIEDE2000; clusters with the same
   name are combined (a person would call them one colour). The palette is `basic` (17 everyday
   words), `fashion` (59 catalogue names, each with its basic `family`) or a CSV file
   `name,r,g,b[,family]`.

Columns added to the manifest (decisions are columns; an unreadable image is a row with
`color_error`, never a crash):

| column | meaning |
|---|---|
| `colors` | up to `colors.max_colors` structs `{name, family, hex, weight, delta_e}`, heaviest first |
| `color_1`, `color_1_family`, `color_1_hex`, `color_1_weight` | the dominant colour, flat |
| `color_method` | foreground method used: `border`, `grabcut`, `none` (`+center`: the mask was not trusted) |
| `color_foreground` | share of the picture taken as the product |
| `color_mask` | the mask PNG (with `--masks`), relative to the project root |
| `color_error` | why the image could not be analysed (`decode_error: ...`), else null; such an image is
  also a failures row (reason: the code before the colon) |

`hex` is the measured colour of the cluster (sRGB), `weight` its share of the product's pixels and
`delta_e` its CIEDE2000 distance to the palette colour that named it.
"""

from __future__ import annotations

from datakit.colors.analyse import ImageColors, analyse, analyse_files, save_mask
from datakit.colors.clusters import Clusters, kmeans, merge_clusters, name_clusters
from datakit.colors.foreground import (
    border_uniformity,
    centred_rect,
    first_pass_rect,
    foreground,
    mask_border,
    mask_grabcut,
)
from datakit.colors.page import write_page
from datakit.colors.palette import Palette, load_palette
from datakit.colors.params import (
    BUILTIN_PALETTES,
    COLOR_COLUMNS,
    COLOR_SCHEMA,
    COLOR_STRUCT,
    KEY,
    MASKS,
    PAGE,
    ColorsParams,
    parse_colors,
)
from datakit.colors.science import ciede2000, srgb_to_lab, to_hex
from datakit.colors.stage import run, schema_of

__all__ = [
    "BUILTIN_PALETTES", "COLOR_COLUMNS", "COLOR_SCHEMA", "COLOR_STRUCT", "KEY", "MASKS", "PAGE", "Clusters",
    "ColorsParams", "ImageColors", "Palette", "analyse", "analyse_files", "border_uniformity", "centred_rect",
    "ciede2000", "first_pass_rect", "foreground", "kmeans", "load_palette", "mask_border", "mask_grabcut",
    "merge_clusters", "name_clusters", "parse_colors", "run", "save_mask", "schema_of", "srgb_to_lab", "to_hex",
    "write_page",
]
