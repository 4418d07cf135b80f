"""Small helpers the HTTP providers share: reading a JSON body that may be an HTML block page,
lenient numbers, plain text from HTML, page windows for page-numbered APIs, and messages."""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser
from typing import Any

from datakit.errors import ProviderError
from datakit.scrape.providers.base import ApiResponse
from datakit.scrape.secrets import redact as _redact

_MIME_BY_EXT = {
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "png": "image/png",
    "gif": "image/gif",
    "webp": "image/webp",
    "bmp": "image/bmp",
    "tif": "image/tiff",
    "tiff": "image/tiff",
    "svg": "image/svg+xml",
}


def mime_for(ext: str | None) -> str | None:
    """MIME type for a file extension or format word ("jpg", "JPEG", ".png"); None if unknown."""
    if not ext:
        return None
    return _MIME_BY_EXT.get(ext.strip().lstrip(".").lower())


def header(resp: ApiResponse, name: str) -> str | None:
    """Case-insensitive response header lookup."""
    lower = name.lower()
    for key, value in resp.headers.items():
        if key.lower() == lower:
            return value
    return None


def snippet(resp: ApiResponse, limit: int = 120) -> str:
    """The start of the body as one printable line, keys redacted (`ApiResponse.snippet`)."""
    return resp.snippet(limit)


def looks_like_html(resp: ApiResponse) -> bool:
    """True for an HTML page (firewall block, CAPTCHA, error page) instead of an API answer."""
    ctype = (header(resp, "Content-Type") or "").lower()
    if "html" in ctype:
        return True
    head = resp.body[:512].lstrip().lower()
    return head.startswith((b"<!doctype", b"<html", b"<head", b"<body"))


def unexpected(provider: str, resp: ApiResponse, why: str) -> ProviderError:
    """The error for an answer that is neither results nor a known error."""
    return ProviderError(
        f"{provider}: unexpected response from {resp.url} (HTTP {resp.status}): {why}: "
        f"{snippet(resp)!r}"
    )


def json_body(provider: str, resp: ApiResponse) -> Any:
    """The decoded JSON body, or ProviderError("unexpected response ...") for HTML, an empty
    body or broken JSON. Never returns something a caller could mistake for zero results."""
    if looks_like_html(resp):
        raise unexpected(provider, resp, "an HTML page instead of JSON (blocked, CAPTCHA or outage?)")
    if not resp.body.strip():
        raise unexpected(provider, resp, "empty body")
    try:
        return resp.json()
    except ProviderError as exc:
        raise ProviderError(f"{provider}: {exc}") from exc


def json_object(provider: str, resp: ApiResponse) -> dict[str, Any]:
    """`json_body`, requiring a JSON object."""
    body = json_body(provider, resp)
    if not isinstance(body, dict):
        raise unexpected(provider, resp, f"JSON {type(body).__name__} instead of an object")
    return body


def rate_limited(provider: str, resp: ApiResponse, detail: str = "") -> ProviderError:
    """The error for a 429 the HTTP client already retried: rate limited or out of quota."""
    wait = header(resp, "Retry-After")
    parts = [f"{provider}: rate limited or quota exhausted (HTTP {resp.status}) after retries"]
    if wait:
        parts.append(f"the server asks to wait {wait} s")
    if detail:
        parts.append(detail)
    parts.append("the hits gathered so far are kept; run again later to resume")
    return ProviderError("; ".join(parts))


def as_int(value: Any) -> int | None:
    """An integer from an int, a float or a numeric string ("1024", "1024.0"); None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value == value and abs(value) != float("inf") else None
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            try:
                return int(float(text))
            except (ValueError, OverflowError):
                return None
    return None


def as_str(value: Any) -> str | None:
    """A non-empty string, else None."""
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def retry_after_seconds(resp: ApiResponse) -> float | None:
    """`Retry-After` in seconds when it is a plain number (HTTP-dates are left to SearchHttp)."""
    value = header(resp, "Retry-After")
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


class _TextCollector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def strip_html(value: str | None) -> str | None:
    """Plain text of an HTML fragment ("<a href=..>Jane</a> &amp; co" -> "Jane & co")."""
    if value is None:
        return None
    collector = _TextCollector()
    collector.feed(value)
    collector.close()
    text = html.unescape("".join(collector.parts))
    text = re.sub(r"\s+", " ", text).strip()
    return text or None


def page_window(offset: int, want: int, max_size: int, max_page: int | None = None) -> tuple[int, int]:
    """(page, page_size) for a page-numbered API, so that page `page` of size `page_size`
    starts exactly at `offset` and holds as close to `want` items as possible.

    The API computes the first item as (page - 1) * page_size, so the size must divide the
    offset. Try sizes from min(want, max_size) upwards; `max_size` always divides an offset
    that earlier full pages produced.
    """
    want = max(1, min(want, max_size))
    for size in range(want, max_size + 1):
        if offset % size:
            continue
        page = offset // size + 1
        if max_page is None or page <= max_page:
            return page, size
    return offset // max_size + 1, max_size


def route(endpoint: str, path: str) -> str:
    """`endpoint` joined with the API route `path`, unless the endpoint already ends with it."""
    base = endpoint.rstrip("/")
    if base.endswith(path.rstrip("/")):
        return base + ("/" if path.endswith("/") else "")
    return base + path


def redact(text: str, secrets: dict[str, str]) -> str:
    """`text` with every secret value (as sent or percent-encoded) replaced by ***."""
    return _redact(text, secrets.values())
