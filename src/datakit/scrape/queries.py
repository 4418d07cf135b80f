"""Query synthesis: the item x attribute matrix of params.yaml becomes queries with labels."""

from __future__ import annotations

import re
import unicodedata

from datakit.errors import ParamsError
from datakit.manifest import check_labels
from datakit.params import ScrapeParams
from datakit.scrape.providers.base import Query


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
