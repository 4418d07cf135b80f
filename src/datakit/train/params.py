"""params.yaml `train:` and `evaluate:`: typed, validated, errors that name `train.<key>`.

No torch here: the CLI validates params before it pays for importing torch.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from datakit.models import REGISTRY
from datakit.params import parse_section

TRAIN = "train"
EVALUATE = "evaluate"

# Defaults that depend on the mode (applied to keys left out or null).
MODE_DEFAULTS: dict[str, dict[str, Any]] = {
    "finetune": {"backbone": "resnet18", "epochs": 10, "batch_size": 32, "lr": 1e-3, "weight_decay": 1e-4},
    # the probe: full-batch L-BFGS; an epoch is 10 iterations, lr the L-BFGS step, weight_decay
    # the L2 coefficient (null: 1 / n_train, sklearn's LogisticRegression at C=1), fitted to
    # convergence (patience 0: the last epoch is kept, no selection by val loss); the
    # backbone is the one `datakit embed` uses by default (ImageNet weights offline)
    "linear_probe": {"backbone": "efficientnet_lite0", "epochs": 30, "batch_size": 1024, "lr": 1.0,
                     "weight_decay": None, "patience": 0},
}


class TrainParams(BaseModel):
    """params.yaml `train:`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["finetune", "linear_probe"] = Field(
        "finetune", description="finetune: the whole network on images; linear_probe: a linear head on embeddings"
    )
    backbone: str = Field("resnet18", description="a name from datakit.models.REGISTRY (null: the mode's default: finetune resnet18, linear_probe efficientnet_lite0)")
    pretrained: bool = Field(True, description="ImageNet weights (false: seeded random weights, tests only)")
    image_size: int | None = Field(None, ge=16, le=1024, description="training crop side (null: the weights' recipe, 224)")
    epochs: int = Field(10, ge=1, le=10_000, description="finetune: passes over the train rows; linear_probe: rounds of 10 L-BFGS iterations")
    batch_size: int = Field(32, ge=1, le=65_536, description="finetune: images per step and process; linear_probe: inference batch (training is full-batch)")
    lr: float = Field(1e-3, gt=0, le=10, description="finetune: head learning rate (AdamW); linear_probe: L-BFGS step")
    backbone_lr_scale: float = Field(0.1, ge=0, le=1, description="backbone lr = lr x this (0 freezes the backbone)")
    weight_decay: float | None = Field(1e-4, ge=0, le=1, description="finetune: AdamW's decoupled decay; linear_probe: L2 coefficient (null: 1 / n_train)")
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    scheduler: Literal["cosine", "none"] = "cosine"
    patience: int = Field(3, ge=0, description="epochs without improvement before stopping (0: never stop early; a probe then keeps its last, converged epoch)")
    monitor: Literal["val_loss", "val_accuracy", "val_balanced_accuracy"] = "val_loss"
    min_delta: float = Field(0.0, ge=0, description="smallest change of `monitor` that counts as an improvement")
    class_weights: str = Field("auto", description="auto (INPUT/class_weights.json when present), none, or a JSON file")
    online_augment: bool = Field(True, description="augment train images on the fly with params.yaml `augment`")
    cache: bool = Field(True, description="decode and resize every image once into a uint8 cache")
    cache_dir: str | None = Field(None, description="where the cache lives (null: <project root>/.datakit/cache/train)")
    num_workers: int = Field(4, ge=0, le=128, description="DataLoader worker processes")
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N")
    amp: bool = Field(True, description="bf16 autocast on CUDA (ignored on the CPU)")
    channels_last: bool = Field(True, description="channels_last memory format on CUDA")
    embeddings: str | None = Field(None, description="linear_probe: the embeddings table (null: INPUT/embeddings.parquet)")
    dvclive: bool = Field(True, description="log per-epoch metrics with dvclive under OUT/dvclive")
    seed: int = 0

    @model_validator(mode="before")
    @classmethod
    def _mode_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict):
            mode = data.get("mode", "finetune")
            defaults = MODE_DEFAULTS.get(mode if isinstance(mode, str) else "", MODE_DEFAULTS["finetune"])
            data = dict(data)
            for key, value in defaults.items():
                if data.get(key) is None:
                    data[key] = value
        return data

    @property
    def augments_online(self) -> bool:
        """Whether this run augments train images on the fly (a fine-tune with online_augment):
        the caller then hands the trainer an augmenter built from params.yaml `augment`."""
        return self.mode == "finetune" and self.online_augment

    @field_validator("backbone")
    @classmethod
    def _known_backbone(cls, v: str) -> str:
        if v not in REGISTRY:
            raise ValueError(f"unknown backbone {v!r} (known: {', '.join(REGISTRY)})")
        return v

    @field_validator("class_weights")
    @classmethod
    def _weights_source(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("expected auto, none or the path of a JSON file {label: weight}")
        return v

    @field_validator("device")
    @classmethod
    def _device_name(cls, v: str) -> str:
        if v not in ("auto", "cpu", "cuda") and not (v.startswith("cuda:") and v[5:].isdigit()):
            raise ValueError("expected auto, cpu, cuda or cuda:N")
        return v


class EvaluateParams(BaseModel):
    """params.yaml `evaluate:`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    batch_size: int = Field(64, ge=1, le=65_536)
    num_workers: int = Field(2, ge=0, le=128)
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N")
    top_mistakes: int = Field(25, ge=0, le=10_000, description="most confident mistakes listed in OUT/mistakes.json")
    thumbnails: bool = Field(True, description="write a small JPEG of each listed mistake under OUT/mistakes/")
    thumb_size: int = Field(128, ge=16, le=1024)
    learning_curve: list[float] = Field(
        default_factory=lambda: [0.1, 0.25, 0.5, 1.0], description="training fractions ([]: no learning curve)"
    )
    cv: bool = Field(True, description="k-fold summary when the manifest has a `fold` column (split.folds)")
    refit: Literal["auto", "probe", "retrain"] = Field(
        "auto", description="how curve and fold points are fitted: auto = probe when embeddings exist, else retrain"
    )
    retrain_epochs: int | None = Field(None, ge=1, description="epochs of each retrain refit (null: the model's own)")
    seed: int = 0

    @field_validator("learning_curve")
    @classmethod
    def _fractions(cls, v: list[float]) -> list[float]:
        bad = [f for f in v if not 0.0 < f <= 1.0]
        if bad:
            raise ValueError(f"fractions must be in (0, 1] (got {bad})")
        return sorted(set(v))

    @field_validator("device")
    @classmethod
    def _device_name(cls, v: str) -> str:
        return TrainParams._device_name(v)


def parse_train(data: dict[str, Any] | None, prefix: str = TRAIN) -> TrainParams:
    """Validate a `train:` mapping; any error is a ParamsError naming `train.<key>`. Keys left
    out (or null) among epochs, batch_size and lr take the mode's defaults (MODE_DEFAULTS)."""
    return parse_section(TrainParams, data, prefix)


def train_section(params: Any, **overrides: Any) -> TrainParams:
    """params.yaml `train:` with CLI `overrides` (None: not given). A `mode` override that differs
    from the file's mode also takes that mode's defaults (MODE_DEFAULTS: epochs, batch size, lr,
    weight decay, ...) unless they are overridden too: the file's fine-tuning epochs are not the
    probe's."""
    from datakit.params import section

    mode = overrides.get("mode")
    raw = dict(getattr(params, TRAIN, None) or {})
    if mode is not None and mode != raw.get("mode", "finetune"):
        for key in MODE_DEFAULTS.get(mode, MODE_DEFAULTS["finetune"]):
            raw.pop(key, None)
        params = params.model_copy(update={TRAIN: raw})
    return section(params, TRAIN, **overrides)


def parse_evaluate(data: dict[str, Any] | None, prefix: str = EVALUATE) -> EvaluateParams:
    """Validate an `evaluate:` mapping; any error is a ParamsError naming `evaluate.<key>`."""
    return parse_section(EvaluateParams, data, prefix)


__all__ = ["EvaluateParams", "MODE_DEFAULTS", "TrainParams", "parse_evaluate", "parse_train", "train_section"]
