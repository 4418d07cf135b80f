"""The HTTP client providers use to call search APIs (the `SearchHttp` of providers/base.py).

It is a separate session from the image downloader: credentials sent to a search API never
travel to an image host (SEC-09). Every response is recorded under `search/` so a dataset can
be rebuilt and audited after a provider changes or dies. Secrets are redacted from every URL,
message and recorded body (SEC-08): `str(aiohttp.ClientResponseError)` would otherwise print
`?api_key=...`.

Redirects are followed by hand. aiohttp forwards custom headers (`X-Subscription-Token`,
`Ocp-Apim-Subscription-Key`) and of course the query string to whatever host a redirect names
(reliability.md section 0.3), so a request that carries a key only follows a redirect to the same
origin (scheme, host, port); any other is an error that names the new host (issue 13 B2).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from typing import Any

import aiohttp
from yarl import URL

from datakit.errors import ProviderError
from datakit.scrape.fetch import parse_retry_after
from datakit.scrape.providers.base import ApiResponse
from datakit.scrape.secrets import redact

RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
REDIRECT_STATUS = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 5


def _origin(url: URL) -> str:
    return f"{url.scheme}://{url.host}:{url.explicit_port or url.port}"


class SearchClient:
    """Implements providers.base.SearchHttp with retries, rate-limit pauses and recording.

    Args:
        user_agent: sent with every request (Wikimedia requires a descriptive one).
        record: called with (record_as, body) for every response; scrape writes it to disk.
        retries: extra attempts on 408/429/5xx and connection errors.
        retry_after_cap_s: a longer Retry-After stops the run as a quota error.
        timeout_s: wall-clock limit for one request.
    """

    def __init__(self, *, user_agent: str, record: Callable[[str, bytes], None] | None = None,
                 retries: int = 3, retry_after_cap_s: float = 60.0, backoff_base_s: float = 1.0,
                 timeout_s: float = 60.0) -> None:
        self.user_agent = user_agent
        self.record = record
        self.retries = retries
        self.retry_after_cap_s = retry_after_cap_s
        self.backoff_base_s = backoff_base_s
        self.timeout_s = timeout_s
        self.requests = 0
        self.rate_limits: dict[str, str] = {}
        self._session: aiohttp.ClientSession | None = None
        self._pause_until = 0.0
        self._rng = random.Random(7)

    async def __aenter__(self) -> SearchClient:
        self._session = aiohttp.ClientSession(
            trust_env=False,
            timeout=aiohttp.ClientTimeout(total=self.timeout_s),
            headers={"User-Agent": self.user_agent, "Accept": "application/json"},
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    def _note_limits(self, headers: dict[str, str], secrets: tuple[str, ...] = ()) -> None:
        """Remember rate-limit headers; pause before the next call when a window is empty."""
        for k, v in headers.items():
            if k.lower().startswith("x-ratelimit"):
                self.rate_limits[k] = redact(v, secrets)  # kept for the run's report
        remaining = headers.get("X-RateLimit-Remaining") or headers.get("x-ratelimit-remaining")
        reset = headers.get("X-RateLimit-Reset") or headers.get("x-ratelimit-reset")
        if remaining and reset:
            try:
                rem = [int(x) for x in remaining.split(",")]
                res = [float(x) for x in reset.split(",")]
            except ValueError:
                return
            for r, s in zip(rem, res, strict=False):
                if r <= 0 and s <= self.retry_after_cap_s:
                    self._pause_until = max(self._pause_until, time.monotonic() + s)

    async def get(self, url: str, *, params: dict[str, Any] | None = None,
                  headers: dict[str, str] | None = None, secrets: tuple[str, ...] = (),
                  record_as: str | None = None) -> ApiResponse:
        assert self._session is not None, "use SearchClient as an async context manager"
        target = URL(url)
        if params:
            target = target.update_query({k: str(v) for k, v in params.items() if v is not None})
        shown = redact(str(target), secrets)
        attempt = 0
        while True:
            wait = self._pause_until - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            attempt += 1
            self.requests += 1
            try:
                status, hdrs, body = await self._follow(target, headers or {}, secrets)
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                if attempt <= self.retries:
                    await asyncio.sleep(self._rng.uniform(0, self.backoff_base_s * 2 ** (attempt - 1)))
                    continue
                raise ProviderError(
                    f"search request to {shown} failed after {attempt} attempts: "
                    f"{redact(type(exc).__name__ + ': ' + str(exc), secrets)}"
                ) from None
            self._note_limits(hdrs, secrets)
            if self.record is not None and record_as is not None:
                self.record(record_as, redact(body.decode("utf-8", "replace"), secrets).encode("utf-8"))
            if status in RETRY_STATUS and attempt <= self.retries:
                delay = parse_retry_after(hdrs.get("Retry-After"))
                if delay is None:
                    delay = self._rng.uniform(0, self.backoff_base_s * 2 ** (attempt - 1))
                elif delay > self.retry_after_cap_s:
                    return ApiResponse(status, hdrs, body, shown, secrets)  # quota: the provider reports it
                await asyncio.sleep(delay)
                continue
            return ApiResponse(status, hdrs, body, shown, secrets)

    async def _follow(self, target: URL, headers: dict[str, str],
                      secrets: tuple[str, ...]) -> tuple[int, dict[str, str], bytes]:
        """GET `target`, following redirects by hand: with `secrets` only within its origin."""
        assert self._session is not None
        current = target
        for _hop in range(MAX_REDIRECTS + 1):
            async with self._session.get(current, headers=headers, allow_redirects=False) as resp:
                location = resp.headers.get("Location")
                if resp.status not in REDIRECT_STATUS or not location:
                    return resp.status, {k: v for k, v in resp.headers.items()}, await resp.read()
                status = resp.status
            try:
                nxt = current.join(URL(location))
            except (ValueError, TypeError):
                raise ProviderError(
                    f"search API at {_origin(target)} answered HTTP {status} with an unreadable Location"
                ) from None
            if nxt.scheme not in ("http", "https") or not nxt.host:
                raise ProviderError(
                    f"search API at {_origin(target)} redirected to a non-HTTP address "
                    f"({redact(nxt.scheme or 'no scheme', secrets)}:); not followed"
                )
            if secrets and _origin(nxt) != _origin(target):
                raise ProviderError(
                    f"search API at {_origin(target)} redirected (HTTP {status}) to another host, "
                    f"{redact(_origin(nxt), secrets)}; datakit does not send the API key to another host. "
                    f"If the API has moved, point --endpoint (or scrape.providers.<name>.endpoint) at "
                    f"the new address"
                )
            current = nxt
        raise ProviderError(f"search API at {_origin(target)} redirected more than {MAX_REDIRECTS} times")
