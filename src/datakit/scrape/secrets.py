"""Keeping API keys out of everything a search API sends back (reliability.md SEC-08/09).

A search API is trusted with its key, but nothing it answers is: an error body may quote the key,
a result URL may carry it, a redirect may point somewhere else. Every message built from a
server's text goes through `redact`; every hit goes through `scrub_hit`, which replaces a key
inside a URL with `URL_MARK`, a word the image fetcher refuses to send anywhere
(`credential_in_url`). A key is matched as sent and in its percent-encoded forms.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import fields
from typing import Any
from urllib.parse import quote, quote_plus

MASK = "***"
URL_MARK = "datakit-redacted-key"
"""Stands in for a key found in a result URL; `Fetcher.fetch` refuses any URL that holds it."""

MIN_SECRET_LEN = 4  # shorter values would blank out ordinary text; real keys are far longer


def forms(secrets: Iterable[str]) -> list[str]:
    """Each secret as sent and percent-encoded (path, query and form styles), longest first."""
    out: set[str] = set()
    for s in secrets:
        if s and len(s) >= MIN_SECRET_LEN:
            out.update({s, quote(s, safe=""), quote(s, safe="/"), quote_plus(s)})
    return sorted(out, key=len, reverse=True)


def redact(text: str, secrets: Iterable[str], mask: str = MASK) -> str:
    """`text` with every form of every secret replaced by `mask`."""
    for form in forms(secrets):
        text = text.replace(form, mask)
    return text


def holds_secret(text: str | None, secrets: Iterable[str]) -> bool:
    return bool(text) and any(form in text for form in forms(secrets))  # type: ignore[operator]


def scrub_hit(hit: Any, secrets: Iterable[str]) -> bool:
    """Remove secrets from every text field of a search hit, in place. A key in `hit.url` becomes
    `URL_MARK` (so the download is refused, and the stored URL still shows which result it was);
    elsewhere it becomes `MASK`. Returns True if anything was found."""
    keys = forms(secrets)
    if not keys:
        return False
    found = False
    for f in fields(hit):
        value = getattr(hit, f.name)
        if isinstance(value, str) and holds_secret(value, keys):
            setattr(hit, f.name, redact(value, keys, URL_MARK if f.name == "url" else MASK))
            found = True
    return found
