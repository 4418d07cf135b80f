"""Typed parameters: one pydantic model per stage under one top-level key of params.yaml.

Loading is strict: unknown keys, duplicate YAML keys, wrong types and out-of-range values are
errors that name the key (`scrape.fetch.timeout_s`), the value and what is allowed (CFG-05/06).
Secrets never belong here: a key that looks like a credential is refused (CFG-03), because
`dvc.lock` stores parameter values in git.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from datakit.errors import ParamsError

DEFAULT_ITEMS = ["blouse", "hoodie", "pullover", "sweater", "shirt", "t-shirt", "vest"]
DEFAULT_ATTRIBUTES = ["striped", "dotted", "leopard"]
USER_AGENT = "datakit/0.1 (+https://github.com/datakit-dev/datakit; dataset builder) aiohttp"
_SECRET_KEY = re.compile(r"(api[_-]?key|secret|token|password|passwd|credential)", re.I)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FetchParams(_Model):
    """How images are downloaded (reliability.md section 5 defaults)."""

    concurrency: int = Field(64, ge=1, le=1024, description="downloads in flight overall")
    per_host: int = Field(8, ge=1, le=256, description="downloads in flight per host")
    deadline_s: float = Field(60.0, gt=0, le=3600, description="wall-clock limit per download, from when it has a slot")
    connect_timeout_s: float = Field(10.0, gt=0, le=600)
    read_timeout_s: float = Field(15.0, gt=0, le=600, description="longest silence while reading")
    max_bytes: int = Field(20 * 1024 * 1024, ge=1024, le=2**34, description="largest decoded body")
    max_redirects: int = Field(5, ge=0, le=20)
    retries: int = Field(2, ge=0, le=10, description="extra tries on connect errors, 408/429/5xx")
    backoff_base_s: float = Field(1.0, ge=0, le=60)
    backoff_cap_s: float = Field(30.0, ge=0, le=600)
    retry_after_cap_s: float = Field(60.0, ge=0, le=3600, description="longer Retry-After: skip as rate_limited")
    allowed_ports: list[int] = Field(default_factory=lambda: [80, 443])
    allow_private: bool = Field(False, description="allow private/loopback addresses and any port (own servers, tests)")
    allow_networks: list[str] = Field(default_factory=list, description="CIDRs allowed although not global")
    respect_robots: bool = Field(True, description="skip hosts answering X-Robots-Tag noai/noimageai/noindex")
    durable: bool = Field(False, description="fsync every image file (slower; power-loss safe)")
    workers: int = Field(0, ge=0, le=64, description="download processes; 0 = one per core (max 8)")
    workers_min_items: int = Field(1000, ge=0, description="below this many downloads, run in one process")

    @field_validator("allowed_ports")
    @classmethod
    def _ports(cls, v: list[int]) -> list[int]:
        bad = [p for p in v if not 1 <= p <= 65535]
        if bad:
            raise ValueError(f"ports must be 1..65535, got {bad}")
        return v

    @field_validator("allow_networks")
    @classmethod
    def _nets(cls, v: list[str]) -> list[str]:
        import ipaddress

        for net in v:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError as exc:
                raise ValueError(f"not a network: {net!r}") from exc
        return v


class ImageParams(_Model):
    max_pixels: int = Field(4_000_000, ge=1024, description="downsize stored images above this")
    max_decode_pixels: int = Field(40_000_000, ge=1024, le=178_000_000, description="refuse above (bombs)")
    min_side: int = Field(32, ge=1)
    max_aspect: float = Field(10.0, ge=1.0)
    formats: list[Literal["JPEG", "PNG", "WEBP", "GIF"]] = Field(
        default_factory=lambda: ["JPEG", "PNG", "WEBP", "GIF"]
    )

    def limits(self) -> Any:
        from datakit.images import ImageLimits

        return ImageLimits(
            max_pixels=self.max_pixels,
            max_decode_pixels=self.max_decode_pixels,
            min_side=self.min_side,
            max_aspect=self.max_aspect,
            formats=tuple(self.formats),
        )


class ProviderParams(_Model):
    endpoint: str | None = Field(None, description="base URL override (mirror, proxy, test server)")
    options: dict[str, Any] = Field(default_factory=dict)


class ScrapeParams(_Model):
    """`scrape:` in params.yaml: what to search for, where, and how to download."""

    provider: str = "openverse"
    items: list[str] = Field(default_factory=lambda: list(DEFAULT_ITEMS), min_length=1)
    attributes: list[str] = Field(default_factory=lambda: list(DEFAULT_ATTRIBUTES))
    template: str = "{attribute} {item}"
    label: Literal["item", "attribute", "query"] = "item"
    per_query: int = Field(50, ge=1, le=10_000)
    min_per_label: int = Field(1, ge=0, description="exit non-zero if a label ends with fewer images")
    seed: int = 0
    user_agent: str = USER_AGENT
    providers: dict[str, ProviderParams] = Field(default_factory=dict)
    fetch: FetchParams = Field(default_factory=FetchParams)
    image: ImageParams = Field(default_factory=ImageParams)

    @field_validator("template")
    @classmethod
    def _template(cls, v: str) -> str:
        try:
            v.format(item="x", attribute="y")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"template may use only {{item}} and {{attribute}}: {exc}") from exc
        if "{item}" not in v and "{attribute}" not in v:
            raise ValueError("template must contain {item} or {attribute}")
        return v

    @model_validator(mode="after")
    def _label_needs_attributes(self) -> ScrapeParams:
        if self.label == "attribute" and not self.attributes:
            raise ValueError("label: attribute needs a non-empty attributes list")
        return self


class DedupParams(_Model):
    """`dedup:` in params.yaml: how near is a duplicate, which copy survives, what to do with
    groups whose members carry different labels."""

    threshold: int | None = Field(
        None, ge=0, le=64,
        description="Hamming radius on the 256-bit dhash (full image) for candidate pairs; default 16 with the embedding signal, 28 without")
    crop_threshold: int = Field(24, ge=0, le=64, description="radius between a full hash and another image's crop hashes")
    crops: bool | None = Field(
        None, description="match full hashes against crop hashes (true), never compute crop hashes (false); "
                          "default: computed, and joined only when the embedding signal is off (it finds re-crops)")
    exact: bool = Field(False, description="hash exactly as imagehash.dhash(img, 16) (slower reference path)")
    keep: Literal["largest", "first", "best_quality"] = "largest"
    conflicts: Literal["drop_group", "keep_majority", "keep_all"] = "drop_group"
    signals: list[Literal["dhash", "embedding"]] | None = Field(
        None, description="candidate signals; default: dhash, plus embedding whenever an embeddings table exists "
                          "(cosine neighbours of datakit embed vectors: they find re-crops)"
    )
    embedding_similarity: float = Field(0.75, gt=0.0, le=1.0, description="cosine similarity at or above which a neighbour is a candidate pair")
    embedding_neighbours: int = Field(10, ge=1, le=100, description="nearest neighbours per image considered by the embedding signal")
    embeddings: str | None = Field(None, description="an embed folder or embeddings.parquet (default: INPUT/embeddings.parquet)")
    verify: bool = Field(True, description="accept a candidate pair only when one picture overlays the other (pixel alignment, datakit.dedup.verify)")
    match_threshold: float = Field(0.97, ge=-1.0, le=1.0, description="overlay score at or above which a candidate pair is a near-duplicate")
    workers: int = Field(0, ge=0, le=64, description="hashing processes; 0 = one per core")
    gallery_groups: int = Field(40, ge=0, le=10_000, description="largest groups shown in the HTML gallery")


# The splits train and evaluate read (the values of a manifest's `split` column): the only keys
# split.ratios and split.counts may hold. Core, so that validating params.yaml imports no stage.
SPLIT_NAMES = ("train", "val", "test")


def unknown_split_names(names: Iterable[object]) -> list[str]:
    """One line per name that is not a split datakit reads (`validation` -> did you mean val?)."""
    return [unknown_key_message(name, SPLIT_NAMES, "split") for name in names
            if isinstance(name, str) and name and name not in SPLIT_NAMES]


class SplitParams(_Model):
    """`split:` in params.yaml: leakage-safe stratified splits that stay stable across versions."""

    ratios: dict[str, float] = Field(default_factory=lambda: {"train": 0.8, "val": 0.1, "test": 0.1})
    counts: dict[str, int] | None = Field(None, description="images per class for non-train splits, instead of ratios")
    group_by: list[str] = Field(default_factory=list, description="extra manifest columns that tie images together")
    folds: int = Field(0, ge=0, le=100, description="k cross-validation folds over the non-test rows (0: none)")
    seed: int = 0
    tiny_classes: Literal["error", "train"] = "error"

    @field_validator("ratios", "counts")
    @classmethod
    def _split_names(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        bad = unknown_split_names(v or {})
        if bad:
            raise ValueError("; ".join(bad) + " (train and evaluate read only these)")
        return v


class AuditParams(_Model):
    """`audit:` in params.yaml: the independent leak check that can gate a pipeline."""

    radius: int = Field(28, ge=0, le=64, description="dhash radius for candidate pairs (every candidate must pass the overlay check)")
    max_leaks: int = Field(0, ge=0, description="exit non-zero above this many cross-split leaks")
    embeddings: str = Field(
        "auto", description="vectors that nominate candidates (they find re-crops): an embed folder or embeddings.parquet; "
                            "'compute': embed the audited images here (embed: settings); 'auto': compute when the model "
                            "can be built, else dhash only; 'none'")
    neighbours: int = Field(10, ge=1, le=100, description="nearest neighbours per image considered by the embedding signal")
    similarity: float = Field(0.75, gt=0.0, le=1.0, description="cosine similarity at or above which a neighbour is a candidate")
    verify: bool = Field(True, description="count a candidate only when one picture overlays the other (as dedup)")
    match_threshold: float = Field(0.97, ge=-1.0, le=1.0, description="overlay score at or above which a pair is a copy")


class Params(_Model):
    """The whole params.yaml: one key per stage, and no other (a misspelt section such as
    `dedupe:` would otherwise leave the stage on its defaults without a word, CFG-06). Stages
    that validate their own section take it here as a plain mapping."""

    scrape: ScrapeParams = Field(default_factory=ScrapeParams)
    dedup: DedupParams = Field(default_factory=DedupParams)
    split: SplitParams = Field(default_factory=SplitParams)
    audit: AuditParams = Field(default_factory=AuditParams)
    augment: dict[str, Any] = Field(default_factory=dict)  # validated by datakit.augment.parse_augment
    balance: dict[str, Any] = Field(default_factory=dict)  # validated by datakit.balance.parse_balance
    embed: dict[str, Any] = Field(default_factory=dict)  # validated by datakit.embed.parse_embed
    compute: dict[str, Any] = Field(default_factory=dict)  # validated by datakit.parallel.parse_compute
    train: dict[str, Any] = Field(default_factory=dict)  # validated by datakit.train.params.parse_train
    evaluate: dict[str, Any] = Field(default_factory=dict)  # validated by datakit.train.params.parse_evaluate
    suspects: dict[str, Any] = Field(default_factory=dict)  # validated by datakit.curation.suspects.parse_suspects
    colors: dict[str, Any] = Field(default_factory=dict)  # validated by datakit.colors.parse_colors
    licenses: dict[str, Any] = Field(default_factory=dict)  # validated by datakit.licences.parse_licenses


# Every stage's section and the function that validates it ("module:function", imported only when
# a command reads the section: augment's needs albumentations, ~4 s to import). The typed fields
# of `Params` above are validated when params.yaml is read; `section()` validates the rest.
SECTIONS: dict[str, str] = {
    "compute": "datakit.parallel:parse_compute",
    "augment": "datakit.augment:parse_augment",
    "balance": "datakit.balance:parse_balance",
    "embed": "datakit.embed:parse_embed",
    "train": "datakit.train.params:parse_train",
    "evaluate": "datakit.train.params:parse_evaluate",
    "colors": "datakit.colors:parse_colors",
    "suspects": "datakit.curation.suspects:parse_suspects",
    "licenses": "datakit.licences:parse_licenses",
}


def section(params: Params, name: str, **overrides: Any) -> Any:
    """The validated model of one section of params.yaml, with CLI `overrides` (None = not given)
    applied; every problem is one ParamsError line naming `<section>.<key>`."""
    import importlib

    value = getattr(params, name)
    if isinstance(value, BaseModel):
        return override(value, name, **overrides) if overrides else value
    if name not in SECTIONS:
        raise ParamsError(unknown_key_message(name, Params.model_fields, "section"))
    module, _, func = SECTIONS[name].partition(":")
    parse = getattr(importlib.import_module(module), func)
    raw = dict(value or {})
    raw.update({k: v for k, v in overrides.items() if v is not None})
    return parse(raw)


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (plain YAML keeps the last one silently)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise ParamsError(f"duplicate key {key!r} at line {key_node.start_mark.line + 1}")
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _find_secrets(obj: Any, path: str = "") -> list[str]:
    found = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            here = f"{path}.{k}" if path else str(k)
            if _SECRET_KEY.search(str(k)):
                found.append(here)
            found.extend(_find_secrets(v, here))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            found.extend(_find_secrets(v, f"{path}[{i}]"))
    return found


def _strip(annotation: Any) -> Any:
    """`X | None` -> X; a union holding one model -> that model; `Annotated[X, ...]` -> X."""
    if get_origin(annotation) is Annotated:
        return _strip(get_args(annotation)[0])
    if get_origin(annotation) in (Union, UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return _strip(args[0])
        models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
        return models[0] if len(models) == 1 else None
    return annotation


def model_at(model: type[BaseModel], loc: Iterable[Any]) -> type[BaseModel] | None:
    """The model that validates the mapping at `loc` under `model` (`("scrape", "fetch")` ->
    FetchParams; dict keys and list indexes step into the values), or None when `loc` does not
    lead to a model. Unknown keys are then named with the keys allowed at their own level."""
    current: Any = model
    for part in loc:
        current = _strip(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(part))
            if field is None:
                return None
            current = field.annotation
        elif get_origin(current) in (dict, Mapping) and get_args(current):
            current = get_args(current)[1]
        elif get_origin(current) in (list, tuple, set, frozenset, Sequence) and get_args(current):
            current = get_args(current)[0]
        else:
            return None
    current = _strip(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def unknown_key_line(key: str, model: type[BaseModel] | None, name: Any) -> str:
    """`<key>: unknown key (did you mean x?) (allowed: a, b)` for an unknown `name` in `model`."""
    if model is None:
        return f"{key}: unknown key"
    near = closest(str(name), model.model_fields)
    hint = f" (did you mean {near}?)" if near else ""
    return f"{key}: unknown key{hint} (allowed: {_allowed_keys(model)})"


def format_validation_error(exc: ValidationError, prefix: str = "", model: type[BaseModel] | None = None) -> str:
    """One line per pydantic error, each naming `<prefix>.<loc>`; `model` is the model that was
    validated (default: the whole `Params`), to list the allowed keys beside an unknown one."""
    lines = []
    root = model or Params
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        key = f"{prefix}.{loc}" if prefix and loc else (prefix or loc)
        if err["type"] == "extra_forbidden":
            lines.append(unknown_key_line(key, model_at(root, err["loc"][:-1]), err["loc"][-1]))
        else:
            value = err.get("input")
            shown = f" (got {value!r})" if not isinstance(value, (dict, list)) else ""
            lines.append(f"{key}: {err['msg'].removeprefix('Value error, ')}{shown}")
    return "; ".join(lines)


def _allowed_keys(model: type[BaseModel]) -> str:
    return ", ".join(model.model_fields)


def closest(key: str, allowed: Iterable[str]) -> str | None:
    """The allowed name `key` most likely misspells (`dedupe` -> `dedup`, `scrap` -> `scrape`,
    `validation` -> `val`), or None when nothing is near."""
    names = [str(a) for a in allowed]
    low = key.lower()
    near = difflib.get_close_matches(low, names, n=1, cutoff=0.75)
    if near:
        return near[0]
    prefixes = [n for n in names if low.startswith(n) or n.startswith(low)] if len(low) >= 3 else []
    return max(prefixes, key=len) if prefixes else None


def unknown_key_message(key: Any, allowed: Iterable[str], what: str = "key") -> str:
    """`unknown <what> 'x' (did you mean y?); allowed: a, b, c` on one line."""
    allowed = list(allowed)
    near = closest(str(key), allowed)
    hint = f" (did you mean {near}?)" if near else ""
    return f"unknown {what} {str(key)!r}{hint}; allowed: {', '.join(allowed)}"


def parse_params(data: dict[str, Any] | None, source: str = "params.yaml") -> Params:
    """Validate a params mapping; errors name the file and the key."""
    data = data or {}
    if not isinstance(data, dict):
        raise ParamsError(f"{source}: the top level must be a mapping of stage names")
    secrets = _find_secrets(data)
    if secrets:
        raise ParamsError(
            f"{source}: {', '.join(secrets)} looks like a credential. Secrets never go in params.yaml "
            f"(dvc.lock stores parameter values in git): export the provider's environment variable instead"
        )
    unknown = [k for k in data if k not in Params.model_fields]
    if unknown:
        raise ParamsError(f"{source}: " + "; ".join(unknown_key_message(k, Params.model_fields, "section")
                                                     for k in unknown))
    # An empty section (`train:` with every key commented out) is YAML null: the stage's defaults.
    data = {k: v for k, v in data.items() if v is not None}
    not_maps = [f"{k}: expected a mapping of keys (got {v!r})" for k, v in data.items() if not isinstance(v, dict)]
    if not_maps:
        raise ParamsError(f"{source}: " + "; ".join(not_maps))
    try:
        return Params.model_validate(data)
    except ValidationError as exc:
        msg = format_validation_error(exc)
        raise ParamsError(f"{source}: {msg}") from None


def read_params_text(path: Path) -> str:
    """The text of a params file; one ParamsError line naming the file when it cannot be read or
    is not UTF-8 (with the byte offset and line of the first bad byte)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ParamsError(f"{path}: cannot read the params file ({exc.strerror or exc})") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ParamsError(
            f"{path}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at byte offset {exc.start}, line {line}); "
            f"save the file as UTF-8"
        ) from None


def load_params(path: Path | None) -> Params:
    """Load params.yaml (a missing default file means all defaults)."""
    if path is None:
        default = Path("params.yaml")
        if not default.exists():
            return Params()
        path = default
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"params file not found: {path}")
    text = read_params_text(path)
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - SafeLoader subclass
    except ParamsError as exc:
        raise ParamsError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {exc}") from None
    return parse_params(data, str(path))


def override(model: _Model, prefix: str, **changes: Any) -> Any:
    """A copy of `model` with CLI overrides applied (None means "not given") and re-validated."""
    data = model.model_dump()
    for key, value in changes.items():
        if value is None:
            continue
        target = data
        parts = key.split(".")
        for part in parts[:-1]:
            target = target[part]
        target[parts[-1]] = value
    try:
        return type(model).model_validate(data)
    except ValidationError as exc:
        raise ParamsError(format_validation_error(exc, prefix, type(model))) from None


def parse_section(model: type[BaseModel], data: Any, prefix: str, *, forms: dict[str, str] | None = None) -> Any:
    """Validate one stage's raw `params.yaml` mapping with `model`. Every problem becomes one
    ParamsError line naming `<prefix>.<key>` (unknown keys list the allowed ones); a ParamsError a
    validator raised is passed through as it is. `forms` names union fields (which pydantic
    reports once per member) with the message for a value of the wrong type: such a field gets
    one line, with the value shown."""
    forms = forms or {}
    if data is not None and not isinstance(data, dict):
        raise ParamsError(f"{prefix}: expected a mapping of keys (got {data!r})")
    try:
        return model.model_validate(data or {})
    except ValidationError as exc:
        lines: list[str] = []
        seen: set[str] = set()
        for err in exc.errors():
            cause = (err.get("ctx") or {}).get("error")
            if isinstance(cause, ParamsError):
                lines.append(str(cause))
                continue
            field = str(err["loc"][0]) if err["loc"] else ""
            loc = field if field in forms else ".".join(str(p) for p in err["loc"])
            key = f"{prefix}.{loc}" if loc else prefix
            if key in seen:
                continue
            seen.add(key)
            if err["type"] == "extra_forbidden":
                lines.append(unknown_key_line(key, model_at(model, err["loc"][:-1]), err["loc"][-1]))
                continue
            value = err.get("input")
            msg = err["msg"].removeprefix("Value error, ")
            if field in forms:
                msg = msg if err["type"] == "value_error" else forms[field]
                lines.append(f"{key}: {msg} (got {value!r})")
                continue
            shown = f" (got {value!r})" if not isinstance(value, (dict, list)) else ""
            lines.append(f"{key}: {msg}{shown}")
        raise ParamsError("; ".join(lines)) from None
