"""Backbones for `datakit embed` and `datakit train`: one registry, one way to load weights and
to preprocess an image (extra `train`: torch and torchvision).

A backbone is a torchvision classification model whose last linear layer is either removed (an
embedding model: the penultimate features) or replaced by a fresh head for our classes. The
registry names the layer to replace and the feature width, so nothing probes models at run time:

| name | features | head replaced |
|---|---|---|
| resnet18 / resnet34 / resnet50 | 512 / 512 / 2048 | `fc` |
| mobilenet_v3_small / _large | 1024 / 1280 | `classifier.3` |
| efficientnet_b0 / b1 | 1280 | `classifier.1` |
| convnext_tiny | 768 | `classifier.2` |
| vit_b_16 | 768 | `heads.head` |

Pretrained weights are torchvision's DEFAULT ImageNet weights. They are read from the torch hub
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

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from datakit.errors import DatakitError

if TYPE_CHECKING:  # pragma: no cover
    import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ModelError(DatakitError):
    """A backbone could not be built or its weights could not be loaded."""


@dataclass(frozen=True)
class Backbone:
    name: str
    dim: int  # width of the features the head sees
    head: str  # dotted path of the final linear layer


REGISTRY: dict[str, Backbone] = {
    b.name: b
    for b in (
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
    """The weights' recipe (pretrained) or ImageNet's 256/224 (random weights); `image_size`
    overrides the crop (the resize keeps the recipe's ratio)."""
    backbone(name)
    if pretrained:
        t = _weights(name).transforms()
        interp = str(getattr(t, "interpolation", "bilinear")).rsplit(".", 1)[-1].lower()
        p = Preprocess(int(t.resize_size[0]), int(t.crop_size[0]), tuple(t.mean), tuple(t.std), interp)  # type: ignore[arg-type]
    else:
        p = Preprocess()
    if image_size:
        p = Preprocess(round(image_size * p.resize / p.crop), image_size, p.mean, p.std, p.interpolation)
    return p


def weights_file(name: str) -> Path:
    """Where the pretrained weights of `name` live in the torch hub cache."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / Path(_weights(name).url).name


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
    if pretrained:
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
        raise ModelError(f"backbone {name}: {spec.head} is not a Linear({spec.dim}, ...) in this torchvision")
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


__all__ = ["REGISTRY", "Backbone", "ModelError", "Preprocess", "backbone", "build", "head_parameters",
           "pick_device", "preprocess_for", "weights_file"]
