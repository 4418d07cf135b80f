"""The asynchronous image downloader.

One credential-free aiohttp session for image hosts (search APIs use their own session in
searchhttp.py, so an API key can never follow a redirect to an image host: SEC-09). For every
URL it guarantees (reliability.md):

* a wall-clock deadline that starts only once the download holds its slot (NET-04, NET-14);
* bounded concurrency overall and per host (CON-05), and per-host backoff on 429 so one slow
  host does not stall the others (NET-12/13);
* a cap on *decoded* body bytes, checked against Content-Length first and while streaming
  (SRV-01..03);
* retries with full-jitter backoff only for connect errors, resets, 408/429/5xx (NET-10/11);
* manual redirects (scheme, credentials and port checked on every hop), and the address check
  in the connector's socket factory for every connection (SEC-01..06);
* opt-out headers honoured (SRV-11).

`fetch` returns bytes or raises `FetchFailed` with a reason code; it never decodes images
(the caller does that off the event loop, NET-15).
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import aiohttp
from yarl import URL

from datakit.fsutil import source_date_epoch
from datakit.params import FetchParams
from datakit.scrape.policy import AddressPolicy, Blocked, BlockedAddress
from datakit.scrape.secrets import URL_MARK

_RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_REDIRECT_STATUS = frozenset({301, 302, 303, 307, 308})
OPTOUT_DIRECTIVES = frozenset({"noai", "noimageai", "noindex", "noimageindex"})


class FetchFailed(Exception):
    """A URL that did not yield a body; `reason` is a manifest reason code."""

    def __init__(self, reason: str, detail: str = "", *, status: int | None = None,
                 retryable: bool = False, retry_after: float | None = None,
                 content_type: str | None = None) -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
        self.status = status
        self.retryable = retryable
        self.retry_after = retry_after
        self.content_type = content_type
        self.attempts = 1


@dataclass
class Fetched:
    data: bytes
    status: int
    content_type: str | None
    final_url: str
    attempts: int


def fetch_time(clock: Callable[[], float] = time.time) -> str:
    """When a download happened, as the manifest's `fetched_at` holds it: ISO 8601 UTC to the
    second ("2026-12-05T14:03:12Z"). With SOURCE_DATE_EPOCH set (reproducible builds) that
    time, never the clock; a malformed value is a DatakitError naming the variable."""
    when = source_date_epoch("unset it to record the real download time") or datetime.fromtimestamp(int(clock()), UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date); None if absent
    or unparseable. Never negative."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if value.isdigit():
        try:
            return float(min(int(value), 10**9))
        except ValueError:
            return None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


def robots_optout(values: list[str], token: str = "datakit") -> bool:
    """Does an `X-Robots-Tag` header list opt out of AI use for us? Directives may be scoped to
    a user agent (`otherbot: noai`); unscoped ones apply to everybody."""
    token = token.lower()
    for value in values:
        scope: str | None = None
        for part in value.split(","):
            part = part.strip().lower()
            if not part:
                continue
            if ":" in part:
                head, _, rest = part.partition(":")
                head = head.strip()
                if head not in OPTOUT_DIRECTIVES and head not in {"unavailable_after", "max-image-preview", "max-snippet", "max-video-preview"}:
                    scope = head
                    part = rest.strip()
            if scope is not None and scope != token:
                continue
            for word in part.split():
                if word in OPTOUT_DIRECTIVES:
                    return True
    return False


@dataclass
class _Host:
    sem: asyncio.Semaphore
    not_before: float = 0.0


@dataclass
class FetchStats:
    requests: int = 0
    retries: int = 0
    bytes: int = 0
    peak_in_flight: int = 0
    in_flight: int = 0
    by_host_backoff: dict[str, float] = field(default_factory=dict)


class Fetcher:
    """Downloads image URLs under one policy. Use as an async context manager."""

    def __init__(self, params: FetchParams, *, user_agent: str, policy: AddressPolicy | None = None,
                 resolver: aiohttp.abc.AbstractResolver | None = None, ssl: object = True,
                 robots_token: str = "datakit") -> None:
        self.p = params
        self.user_agent = user_agent
        self.policy = policy or AddressPolicy(
            allow_private=params.allow_private,
            allow_networks=params.allow_networks,
            allowed_ports=params.allowed_ports,
        )
        self._resolver = resolver
        self._ssl = ssl
        self.robots_token = robots_token
        self._hosts: dict[str, _Host] = {}
        self._global = asyncio.Semaphore(params.concurrency)
        self.stats = FetchStats()
        self._session: aiohttp.ClientSession | None = None
        self._rng = random.Random(0x5EED)

    async def __aenter__(self) -> Fetcher:
        connector = aiohttp.TCPConnector(
            limit=self.p.concurrency + 8,  # our semaphores gate first: never wait on the pool
            limit_per_host=0,
            resolver=self._resolver,
            socket_factory=self.policy.socket_factory,
            ssl=self._ssl,  # certificates are always verified unless a context says otherwise
            ttl_dns_cache=300,
        )
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self.p.connect_timeout_s, sock_read=self.p.read_timeout_s
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=timeout,
            trust_env=False,  # never a proxy or ~/.netrc credentials (SEC-14)
            headers={"User-Agent": self.user_agent, "Accept": "image/*,*/*;q=0.5"},
            cookie_jar=aiohttp.DummyCookieJar(),
            raise_for_status=False,
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    def _host(self, key: str) -> _Host:
        host = self._hosts.get(key)
        if host is None:
            host = self._hosts[key] = _Host(asyncio.Semaphore(self.p.per_host))
        return host

    def _backoff(self, attempt: int) -> float:
        cap = min(self.p.backoff_cap_s, self.p.backoff_base_s * (2 ** attempt))
        return self._rng.uniform(0, cap) if cap > 0 else 0.0

    async def fetch(self, url: str) -> Fetched:
        """Download one URL. Raises FetchFailed with a reason code."""
        if URL_MARK in url:  # the search API put its key into this URL (issue 13 B11, SEC-09)
            raise FetchFailed("credential_in_url", "the search API put its key into this URL; "
                              "datakit does not send the key to another host")
        try:
            parsed = self.policy.check_url(url)
        except Blocked as exc:
            raise FetchFailed(exc.reason, exc.detail) from None
        host_key = f"{parsed.host}:{parsed.port}"
        host = self._host(host_key)
        attempts = 0
        while True:
            wait = host.not_before - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            attempts += 1
            try:
                async with host.sem, self._global:
                    self.stats.in_flight += 1
                    self.stats.peak_in_flight = max(self.stats.peak_in_flight, self.stats.in_flight)
                    try:
                        # The deadline starts here, once the download holds its slots.
                        async with asyncio.timeout(self.p.deadline_s):
                            result = await self._follow(parsed)
                    except TimeoutError:
                        raise FetchFailed("timeout", f"no complete body within {self.p.deadline_s:g} s") from None
                    finally:
                        self.stats.in_flight -= 1
                result.attempts = attempts
                return result
            except FetchFailed as exc:
                exc.attempts = attempts
                if not exc.retryable or attempts > self.p.retries:
                    if exc.reason == "http_429":
                        exc.reason = "rate_limited"
                    raise
                delay = self._backoff(attempts - 1)
                if exc.retry_after is not None:
                    if exc.retry_after > self.p.retry_after_cap_s:
                        # Waiting hours is worse than skipping; the host is deferred.
                        host.not_before = time.monotonic() + self.p.retry_after_cap_s
                        exc.reason = "rate_limited"
                        exc.detail = f"Retry-After {exc.retry_after:.0f} s exceeds the cap"
                        raise
                    delay = exc.retry_after
                if exc.status == 429:
                    # Per host: other hosts keep their pace (NET-13).
                    host.not_before = max(host.not_before, time.monotonic() + delay)
                    self.stats.by_host_backoff[host_key] = delay
                self.stats.retries += 1
                await asyncio.sleep(delay)

    async def _follow(self, url: URL) -> Fetched:
        assert self._session is not None
        current = url
        for _hop in range(self.p.max_redirects + 1):
            self.stats.requests += 1
            try:
                async with self._session.get(current, allow_redirects=False, auto_decompress=True) as resp:
                    if resp.status in _REDIRECT_STATUS:
                        location = resp.headers.get("Location")
                        if not location:
                            raise FetchFailed("bad_response", f"HTTP {resp.status} without Location", status=resp.status)
                        try:
                            nxt = current.join(URL(location))
                        except (ValueError, TypeError):
                            raise FetchFailed("bad_url", "unparseable redirect target") from None
                        try:
                            current = self.policy.check_url(str(nxt) if nxt.scheme not in ("http", "https") else nxt)
                        except Blocked as exc:
                            raise FetchFailed(exc.reason, f"redirect: {exc.detail}", status=resp.status) from None
                        continue
                    return await self._body(resp, current)
            except FetchFailed:
                raise
            except BlockedAddress as exc:
                raise FetchFailed(exc.reason, str(exc).removeprefix(f"datakit-{exc.reason}: ")) from None
            except aiohttp.ClientConnectorCertificateError as exc:
                raise FetchFailed("tls_error", _short(exc)) from None
            except aiohttp.ClientSSLError as exc:
                raise FetchFailed("tls_error", _short(exc)) from None
            except aiohttp.ClientConnectorDNSError as exc:
                raise FetchFailed("dns_error", _short(exc)) from None
            except aiohttp.ClientConnectorError as exc:
                blocked = _blocked_reason(exc)
                if blocked:
                    raise FetchFailed(blocked, f"{current.host} is not a public address") from None
                raise FetchFailed("connect_error", _short(exc), retryable=True) from None
            except aiohttp.ServerTimeoutError as exc:
                raise FetchFailed("timeout", _short(exc)) from None
            except aiohttp.ClientPayloadError as exc:
                raise _payload_failure(exc) from None
            except aiohttp.ClientResponseError as exc:
                raise FetchFailed("bad_response", f"HTTP {exc.status}: {exc.message}"[:200]) from None
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError, ConnectionError) as exc:
                raise FetchFailed("payload_error", _short(exc), retryable=True) from None
            except aiohttp.InvalidURL as exc:
                raise FetchFailed("bad_url", _short(exc)) from None
            except aiohttp.ClientError as exc:
                raise FetchFailed("bad_response", _short(exc)) from None
        raise FetchFailed("too_many_redirects", f"more than {self.p.max_redirects}")

    async def _body(self, resp: aiohttp.ClientResponse, url: URL) -> Fetched:
        status = resp.status
        ctype = resp.headers.get("Content-Type")
        if status != 200:
            retry_after = parse_retry_after(resp.headers.get("Retry-After"))
            if status in (204, 304):
                raise FetchFailed("empty", f"HTTP {status}", status=status, content_type=ctype)
            raise FetchFailed(
                f"http_{status}", resp.reason or "", status=status, retryable=status in _RETRY_STATUS,
                retry_after=retry_after if status in (429, 503) else None, content_type=ctype,
            )
        if self.p.respect_robots:
            tags = resp.headers.getall("X-Robots-Tag", [])
            if tags and robots_optout(tags, self.robots_token):
                raise FetchFailed("robots_optout", "; ".join(tags)[:200], status=status, content_type=ctype)
        declared = resp.headers.get("Content-Length")
        if declared is not None and declared.strip().isdigit() and int(declared) > self.p.max_bytes:
            raise FetchFailed("too_large", f"Content-Length {declared} > {self.p.max_bytes}", status=status, content_type=ctype)
        chunks: list[bytes] = []
        total = 0
        try:
            async for chunk in resp.content.iter_chunked(1 << 16):
                total += len(chunk)
                if total > self.p.max_bytes:
                    raise FetchFailed("too_large", f"body exceeds {self.p.max_bytes} bytes", status=status, content_type=ctype)
                chunks.append(chunk)
        except aiohttp.ClientPayloadError as exc:
            raise _payload_failure(exc, declared=declared, got=total) from None
        self.stats.bytes += total
        data = b"".join(chunks)
        if not data:
            raise FetchFailed("empty", "0 bytes", status=status, content_type=ctype)
        return Fetched(data, status, ctype, str(url), 1)


def _short(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text[:200]


def _blocked_reason(exc: aiohttp.ClientConnectorError) -> str | None:
    err = getattr(exc, "os_error", None)
    if isinstance(err, BlockedAddress):
        return err.reason
    text = str(exc)
    for reason in ("blocked_address", "blocked_port"):
        if f"datakit-{reason}" in text:
            return reason
    return None


def _payload_failure(exc: aiohttp.ClientPayloadError, *, declared: str | None = None, got: int = 0) -> FetchFailed:
    text = str(exc).lower()
    if "encoding" in text or "decompress" in text or "brotli" in text or "zlib" in text:
        return FetchFailed("bad_encoding", _short(exc))
    if declared is not None and declared.strip().isdigit() and got < int(declared):
        return FetchFailed("incomplete", f"{got} of {declared} bytes", retryable=True)
    if "not completed" in text or "content-length" in text:
        return FetchFailed("incomplete", _short(exc), retryable=True)
    return FetchFailed("payload_error", _short(exc), retryable=True)
