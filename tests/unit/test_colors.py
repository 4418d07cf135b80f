"""datakit.colors: CIEDE2000 against the published test data, CIELAB, foreground on plain and busy
backgrounds, merging, naming, palettes, params, and the dominant colour of rendered garments."""

from __future__ import annotations

import numpy as np
import pytest

from datakit.colors import (
    Clusters,
    ColorsParams,
    analyse,
    ciede2000,
    first_pass_rect,
    foreground,
    load_palette,
    merge_clusters,
    name_clusters,
    parse_colors,
    srgb_to_lab,
)
from datakit.errors import ParamsError
from datakit.scrape.synthetic_render import render

# Sharma, Wu & Dalal (2005), Table 1: (L1, a1, b1, L2, a2, b2, ΔE00), the 34 published pairs.
SHARMA_PAIRS = [
    (50.0000, 2.6772, -79.7751, 50.0000, 0.0000, -82.7485, 2.0425),
    (50.0000, 3.1571, -77.2803, 50.0000, 0.0000, -82.7485, 2.8615),
    (50.0000, 2.8361, -74.0200, 50.0000, 0.0000, -82.7485, 3.4412),
    (50.0000, -1.3802, -84.2814, 50.0000, 0.0000, -82.7485, 1.0000),
    (50.0000, -1.1848, -84.8006, 50.0000, 0.0000, -82.7485, 1.0000),
    (50.0000, -0.9009, -85.5211, 50.0000, 0.0000, -82.7485, 1.0000),
    (50.0000, 0.0000, 0.0000, 50.0000, -1.0000, 2.0000, 2.3669),
    (50.0000, -1.0000, 2.0000, 50.0000, 0.0000, 0.0000, 2.3669),
    (50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0009, 7.1792),
    (50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0010, 7.1792),
    (50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0011, 7.2195),
    (50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0012, 7.2195),
    (50.0000, -0.0010, 2.4900, 50.0000, 0.0009, -2.4900, 4.8045),
    (50.0000, -0.0010, 2.4900, 50.0000, 0.0010, -2.4900, 4.8045),
    (50.0000, -0.0010, 2.4900, 50.0000, 0.0011, -2.4900, 4.7461),
    (50.0000, 2.5000, 0.0000, 50.0000, 0.0000, -2.5000, 4.3065),
    (50.0000, 2.5000, 0.0000, 73.0000, 25.0000, -18.0000, 27.1492),
    (50.0000, 2.5000, 0.0000, 61.0000, -5.0000, 29.0000, 22.8977),
    (50.0000, 2.5000, 0.0000, 56.0000, -27.0000, -3.0000, 31.9030),
    (50.0000, 2.5000, 0.0000, 58.0000, 24.0000, 15.0000, 19.4535),
    (50.0000, 2.5000, 0.0000, 50.0000, 3.1736, 0.5854, 1.0000),
    (50.0000, 2.5000, 0.0000, 50.0000, 3.2972, 0.0000, 1.0000),
    (50.0000, 2.5000, 0.0000, 50.0000, 1.8634, 0.5757, 1.0000),
    (50.0000, 2.5000, 0.0000, 50.0000, 3.2592, 0.3350, 1.0000),
    (60.2574, -34.0099, 36.2677, 60.4626, -34.1751, 39.4387, 1.2644),
    (63.0109, -31.0961, -5.8663, 62.8187, -29.7946, -4.0864, 1.2630),
    (61.2901, 3.7196, -5.3901, 61.4292, 2.2480, -4.9620, 1.8731),
    (35.0831, -44.1164, 3.7933, 35.0232, -40.0716, 1.5901, 1.8645),
    (22.7233, 20.0904, -46.6940, 23.0331, 14.9730, -42.5619, 2.0373),
    (36.4612, 47.8580, 18.3852, 36.2715, 50.5065, 21.2231, 1.4146),
    (90.8027, -2.0831, 1.4410, 91.1528, -1.6435, 0.0447, 1.4441),
    (90.9257, -0.5406, -0.9208, 88.6381, -0.8985, -0.7239, 1.5381),
    (6.7747, -0.2908, -2.4247, 5.8714, -0.0985, -2.2286, 0.6377),
    (2.0776, 0.0795, -1.1350, 0.9033, -0.0636, -0.5514, 0.9082),
]


def test_there_are_34_reference_pairs() -> None:
    assert len(SHARMA_PAIRS) == 34


@pytest.mark.parametrize("pair", SHARMA_PAIRS, ids=[f"pair{i + 1}" for i in range(34)])
def test_ciede2000_matches_sharma_pair(pair: tuple[float, ...]) -> None:
    lab1, lab2, expected = np.array(pair[:3]), np.array(pair[3:6]), pair[6]
    assert abs(float(ciede2000(lab1, lab2)) - expected) < 1e-4
    assert abs(float(ciede2000(lab2, lab1)) - expected) < 1e-4  # symmetric


def test_ciede2000_vectorised_and_zero_on_identity() -> None:
    data = np.array(SHARMA_PAIRS)
    got = ciede2000(data[:, :3], data[:, 3:6])
    assert got.shape == (34,) and np.max(np.abs(got - data[:, 6])) < 1e-4
    assert np.all(ciede2000(data[:, :3], data[:, :3]) == 0.0)
    matrix = ciede2000(data[:5, None, :3], data[None, :7, 3:6])  # broadcasting: all pairs
    assert matrix.shape == (5, 7) and abs(matrix[0, 0] - 2.0425) < 1e-4


def test_srgb_to_lab_reference_values() -> None:
    lab = srgb_to_lab(np.array([[255, 255, 255], [0, 0, 0], [255, 0, 0], [0, 0, 255]], dtype=np.uint8))
    np.testing.assert_allclose(lab[0], [100.0, 0.0, 0.0], atol=1e-3)
    np.testing.assert_allclose(lab[1], [0.0, 0.0, 0.0], atol=1e-9)
    np.testing.assert_allclose(lab[2], [53.2408, 80.0925, 67.2032], atol=2e-3)
    np.testing.assert_allclose(lab[3], [32.2970, 79.1875, -107.8602], atol=2e-3)
    floats = srgb_to_lab(np.array([[255.0, 0.0, 0.0]]))
    np.testing.assert_allclose(floats[0], lab[2], atol=1e-9)  # uint8 table and float path agree


# ---- foreground ------------------------------------------------------------------------------


def _scene(background: str, seed: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """A product (an ellipse-and-rectangle "garment", red) on a plain or a busy background."""
    h, w = 120, 160
    rng = np.random.default_rng(seed)
    if background == "plain":
        img = np.empty((h, w, 3), dtype=np.float64)
        img[:] = (236, 236, 228)
    yy, xx = np.mgrid[:h, :w]
    if background == "busy":  # a tiled floor under a light gradient, with grain: no one background colour
        tiles = ((xx // 12 + yy // 12) % 2).astype(bool)
        img = np.where(tiles[..., None], np.array([70.0, 110.0, 150.0]), np.array([170.0, 160.0, 120.0]))
        img *= (0.8 + 0.4 * xx / w)[..., None]
        img += rng.normal(0, 10, img.shape)
    truth = (((xx - 80) / 38.0) ** 2 + ((yy - 62) / 40.0) ** 2 <= 1) | ((abs(xx - 80) < 50) & (abs(yy - 45) < 8))
    img[truth] = (200, 30, 45)
    img += rng.normal(0, 2, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), truth


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def test_foreground_plain_background_uses_border_colour() -> None:
    img, truth = _scene("plain")
    mask, method = foreground(img, srgb_to_lab(img), ColorsParams())
    assert method == "border"
    assert _iou(mask, truth) > 0.95


def test_foreground_busy_background_uses_grabcut() -> None:
    img, truth = _scene("busy")
    mask, method = foreground(img, srgb_to_lab(img), ColorsParams())
    assert method == "grabcut"
    assert _iou(mask, truth) > 0.85


def test_first_pass_box_contains_the_product_and_the_centred_fallback() -> None:
    img, truth = _scene("busy")
    x, y, w, h = first_pass_rect(srgb_to_lab(img), ColorsParams())
    ys, xs = np.nonzero(truth)
    assert x <= xs.min() and y <= ys.min() and x + w > xs.max() and y + h > ys.max()
    assert x >= 1 and y >= 1 and x + w <= img.shape[1] - 1 and y + h <= img.shape[0] - 1
    flat = np.full((60, 80, 3), 128, dtype=np.uint8)  # nothing differs from the border
    assert first_pass_rect(srgb_to_lab(flat), ColorsParams(margin=0.1)) == (8, 6, 64, 48)


def test_foreground_none_and_untrusted_mask() -> None:
    img, _ = _scene("plain")
    mask, method = foreground(img, srgb_to_lab(img), ColorsParams(foreground="none"))
    assert method == "none" and mask.all()
    blank = np.full((50, 50, 3), 200, dtype=np.uint8)
    mask, method = foreground(blank, srgb_to_lab(blank), ColorsParams(foreground="border", margin=0.2))
    assert method == "border+center" and mask.sum() == 30 * 30
    flat = analyse(blank, ColorsParams(foreground="grabcut"), load_palette("basic"))  # no product at all
    assert flat.method == "grabcut+center" and [c["name"] for c in flat.colors] == ["white"]


@pytest.mark.parametrize("kind", ["plain", "noise"])
def test_rendered_garment_masks_match_the_renderer(kind: str) -> None:
    for seed in range(400):  # the first synthetic garment with this background
        r = render("t-shirt", None, seed, size=160)
        if r.truth.background == kind:
            break
    img = np.asarray(r.image)
    for choice in ("auto", "border" if kind == "plain" else "grabcut"):
        mask, method = foreground(img, srgb_to_lab(img), ColorsParams(work_size=160, foreground=choice))
        assert method in ("border", "grabcut")
        assert _iou(mask, r.mask > 0.5) > 0.8, (choice, method)


# ---- clusters and names ----------------------------------------------------------------------


def _clusters(rgbs: list[tuple[int, int, int]], weights: list[float]) -> Clusters:
    rgb = np.array(rgbs, dtype=np.float64)
    return Clusters(srgb_to_lab(rgb), rgb, np.array(weights))


def test_merge_joins_close_clusters_with_weighted_means() -> None:
    c = _clusters([(200, 30, 45), (190, 28, 42), (40, 90, 205)], [0.3, 0.1, 0.6])
    assert float(ciede2000(c.lab[0], c.lab[1])) < 5
    merged = merge_clusters(c, threshold=5.0)
    assert len(merged.weight) == 2
    np.testing.assert_allclose(sorted(merged.weight), [0.4, 0.6])
    red = int(np.argmin(merged.weight))
    np.testing.assert_allclose(merged.lab[red], (0.3 * c.lab[0] + 0.1 * c.lab[1]) / 0.4)
    np.testing.assert_allclose(merged.rgb[red], [197.5, 29.5, 44.25])
    assert len(merge_clusters(c, threshold=0.5).weight) == 3  # nothing that close
    assert len(merge_clusters(c, threshold=1000).weight) == 1


def test_merge_takes_the_closest_pair_first() -> None:
    # a-b are closer than b-c: a and b merge first, then (ab) is judged against c
    c = _clusters([(120, 120, 120), (126, 126, 126), (140, 140, 140)], [0.5, 0.25, 0.25])
    once = merge_clusters(c, threshold=float(ciede2000(c.lab[0], c.lab[1])) + 1e-6)
    np.testing.assert_allclose(sorted(once.weight), [0.25, 0.75])


def test_palette_colours_name_themselves() -> None:
    for spec in ("basic", "fashion"):
        pal = load_palette(spec)
        idx, de = pal.nearest(pal.lab)
        assert list(idx) == list(range(len(pal.names))) and np.all(de == 0)
    basic = load_palette("basic")
    assert {"red", "orange", "navy", "beige", "black", "white"} <= set(basic.names)
    fashion = load_palette("fashion")
    assert set(fashion.families) <= set(basic.names)  # every fashion name has a basic family


def test_naming_combines_same_names_and_orders_by_weight() -> None:
    pal = load_palette("basic")
    # two reds (too far apart to merge), a navy, a sliver of yellow below min_weight
    c = _clusters([(215, 35, 40), (175, 25, 40), (25, 35, 95), (245, 205, 40)], [0.25, 0.2, 0.52, 0.03])
    named = name_clusters(c, pal, max_colors=3, min_weight=0.05)
    assert [d["name"] for d in named] == ["navy", "red"]
    assert named[1]["weight"] == pytest.approx(0.45)
    assert named[0]["hex"].startswith("#") and len(named[0]["hex"]) == 7
    assert named[0]["family"] == "navy" and named[0]["delta_e"] < 5
    assert len(name_clusters(c, pal, max_colors=1, min_weight=0.0)) == 1
    # the heaviest colour stays even when it is under min_weight
    assert len(name_clusters(_clusters([(25, 35, 95)], [0.01]), pal, max_colors=3, min_weight=0.5)) == 1


def test_custom_palette_file_and_errors(tmp_path) -> None:
    good = tmp_path / "house.csv"
    good.write_text("# our house colours\nname,r,g,b,family\nsignal,250,20,20,red\nnight,10,10,40,navy\n")
    pal = load_palette(str(good))
    assert pal.names == ("signal", "night") and pal.families == ("red", "navy")
    assert pal.names[int(pal.nearest(srgb_to_lab(np.array([[200.0, 30.0, 45.0]])))[0][0])] == "signal"
    no_family = tmp_path / "plain.csv"
    no_family.write_text("name,r,g,b\nink,0,0,0\n")
    assert load_palette(str(no_family)).families == ("ink",)
    for text, words in [("name,r,g\nx,1,2\n", "missing b"), ("name,r,g,b\nx,1,2,300\n", "0..255"),
                        ("name,r,g,b\nx,1,two,3\n", "integers"), ("name,r,g,b\nx,1,2,3\nx,4,5,6\n", "twice"),
                        ("name,r,g,b\n", "no colours")]:
        bad = tmp_path / "bad.csv"
        bad.write_text(text)
        with pytest.raises(ParamsError, match="colors.palette") as exc:
            load_palette(str(bad))
        assert words in str(exc.value)
    with pytest.raises(ParamsError, match="colors.palette: no palette file"):
        load_palette(str(tmp_path / "missing.csv"))


def test_params_errors_name_the_key() -> None:
    assert parse_colors(None) == ColorsParams()
    with pytest.raises(ParamsError, match=r"colors\.foreground"):
        parse_colors({"foreground": "magic"})
    with pytest.raises(ParamsError, match=r"colors\.k"):
        parse_colors({"k": 0})
    with pytest.raises(ParamsError, match=r"colors\.bogus: unknown key \(allowed: foreground"):
        parse_colors({"bogus": 1})
    with pytest.raises(ParamsError, match=r"colors\.palette"):
        parse_colors({"palette": "rainbow"})
    with pytest.raises(ParamsError, match="colors: expected a mapping"):
        parse_colors("auto")  # type: ignore[arg-type]


# ---- whole images ----------------------------------------------------------------------------


def test_analyse_is_deterministic_and_names_a_plain_product() -> None:
    img, _ = _scene("busy")
    pal = load_palette("basic")
    a = analyse(img, ColorsParams(), pal)
    b = analyse(img.copy(), ColorsParams(), pal)
    assert a.colors == b.colors and a.method == b.method and np.array_equal(a.mask, b.mask)
    assert a.colors[0]["name"] == "red" and a.colors[0]["weight"] > 0.9
    everything = analyse(img, ColorsParams(foreground="none"), pal)
    assert everything.colors[0]["weight"] < a.colors[0]["weight"]  # the background dilutes it


def test_dominant_colour_of_rendered_garments() -> None:
    """The renderer's ground-truth main colour is the named dominant colour in >= 90 % of a small
    mixed sample (plain, gradient and noise backgrounds; plain, striped, dotted, leopard)."""
    pal = load_palette("basic")
    p = ColorsParams()
    hits = total = 0
    for seed in range(40):
        attribute = (None, "striped", "dotted", "leopard")[seed % 4]
        r = render(("t-shirt", "hoodie", "vest", "shirt", "blouse")[seed % 5], attribute, 7000 + seed, size=200)
        res = analyse(np.asarray(r.image), p, pal)
        hits += res.colors[0]["name"] == r.truth.colour_name
        total += 1
    assert hits / total >= 0.9, f"{hits}/{total}"
