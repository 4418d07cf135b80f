"""Query synthesis: the item x attribute matrix of params.yaml becomes queries with labels."""

from __future__ import annotations

import re
import unicodedata

from datakit.errors import ParamsError
from datakit.params import ScrapeParams
from datakit.scrape.providers.base import Query

_WINDOWS_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)), *(f"lpt{i}" for i in range(1, 10))}


def build_queries(p: ScrapeParams) -> list[Query]:
    """`items x attributes` through `template`, in params order; the label comes from
    `p.label` (item, attribute or the whole query). Without attributes, one query per item."""
    out: list[Query] = []
    attributes: list[str | None] = list(p.attributes) if p.attributes else [None]
    for item in p.items:
        for attr in attributes:
            text = p.template.format(item=item, attribute=attr or "").strip()
            text = re.sub(r"\s+", " ", text)
            label = {"item": item, "attribute": attr or "", "query": text}[p.label]
            out.append(Query(text=text, label=label, item=item, attribute=attr))
    seen: set[str] = set()
    dups = [q.text for q in out if q.text in seen or seen.add(q.text)]  # type: ignore[func-returns-value]
    if dups:
        raise ParamsError(f"scrape.items/attributes produce the same query twice: {sorted(set(dups))}")
    check_labels([q.label for q in out])
    return out


def slug(text: str, max_len: int = 80) -> str:
    """A file-name-safe, stable form of a query or label (NFC, lower-case, [a-z0-9-])."""
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii").lower()
    text = re.sub(r"[^a-z0-9]+", "-", text).strip("-")
    return (text or "x")[:max_len]


def check_labels(labels: list[str]) -> None:
    """Refuse label sets that would collide as folder names (CFG-07): case, Unicode
    normalisation, reserved names, trailing dots or spaces, > 255 bytes."""
    problems: list[str] = []
    by_key: dict[str, set[str]] = {}
    for label in dict.fromkeys(labels):
        if not label or not label.strip():
            problems.append("an empty label")
            continue
        if label != label.strip() or label.endswith("."):
            problems.append(f"{label!r} ends with a space or dot")
        if len(label.encode("utf-8")) > 255:
            problems.append(f"{label[:20]!r}... is longer than 255 bytes")
        if any(c in label for c in "/\\\x00") or any(ord(c) < 32 for c in label):
            problems.append(f"{label!r} contains a path separator or control character")
        if label.lower().split(".")[0] in _WINDOWS_RESERVED:
            problems.append(f"{label!r} is a reserved file name on Windows")
        key = unicodedata.normalize("NFC", label).casefold()
        by_key.setdefault(key, set()).add(label)
    for names in by_key.values():
        if len(names) > 1:
            problems.append(f"labels {sorted(names)} collide (case or Unicode form)")
    if problems:
        raise ParamsError("labels unusable as class names: " + "; ".join(problems))
