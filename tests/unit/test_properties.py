"""Property tests (reliability.md 4.2): address policy, header parsers, image validator."""

from __future__ import annotations

import ipaddress
import socket

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from datakit.images import ImageRejected, check_bytes
from datakit.manifest import is_known_reason
from datakit.scrape.fetch import parse_retry_after
from datakit.scrape.policy import AddressPolicy, Blocked, is_public, numeric_host
from tests.fixtures import images as F

CI = settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


def _ipv4_forms(n: int) -> st.SearchStrategy[str]:
    a, b, c, d = (n >> 24) & 255, (n >> 16) & 255, (n >> 8) & 255, n & 255
    return st.sampled_from([
        f"{a}.{b}.{c}.{d}", str(n), hex(n), f"{a}.{(b << 16) | (c << 8) | d}", f"{a}.{b}.{(c << 8) | d}",
        f"0{a:o}.0{b:o}.0{c:o}.0{d:o}", f"{hex(a)}.{hex(b)}.{hex(c)}.{hex(d)}",
    ])


hosts = st.one_of(
    st.integers(0, 2**32 - 1).flatmap(_ipv4_forms),
    st.integers(0, 2**32 - 1).map(lambda n: f"[::ffff:{ipaddress.IPv4Address(n)}]"),
    st.integers(0, 2**32 - 1).map(lambda n: f"[64:ff9b::{ipaddress.IPv4Address(n)}]"),
    st.integers(0, 2**128 - 1).map(lambda n: f"[{ipaddress.IPv6Address(n)}]"),
    st.sampled_from(["example.com", "localhost", "evil.test", "xn--bcher-kva.example"]),
)


@CI
@given(hosts)
@example("2130706433")
@example("0251.0376.0251.0376")
@example("[64:ff9b::7f00:1]")
def test_url_verdict_matches_the_address_it_means(host: str) -> None:  # plan 4.2.3, SEC-01/02/05
    policy = AddressPolicy()
    literal = numeric_host(host)
    try:
        policy.check_url(f"http://{host}/x.jpg")
        verdict = True
    except Blocked as exc:
        assert exc.reason == "blocked_address"
        verdict = False
    if literal is None:
        assert verdict  # names are judged at connect time, on the address connected
    else:
        ip = ipaddress.ip_address(literal)
        assert verdict == is_public(ip)
        if verdict:  # allowed implies global, and any embedded IPv4 global too
            assert ip.is_global
            if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
                assert ip.ipv4_mapped.is_global


@CI
@given(st.integers(0, 2**32 - 1))
def test_socket_factory_agrees_with_policy(n: int) -> None:
    policy = AddressPolicy(allowed_ports=[80])
    addr = str(ipaddress.IPv4Address(n))
    try:
        sock = policy.socket_factory((socket.AF_INET, socket.SOCK_STREAM, 0, "", (addr, 80)))
        sock.close()
        allowed = True
    except OSError:
        allowed = False
    assert allowed == is_public(ipaddress.IPv4Address(n))


@CI
@given(st.one_of(st.none(), st.text(max_size=40), st.integers(-(10**20), 10**20).map(str),
                 st.datetimes().map(lambda d: d.strftime("%a, %d %b %Y %H:%M:%S GMT"))))
def test_retry_after_never_raises_and_is_bounded(value: str | None) -> None:  # plan 4.2.4
    got = parse_retry_after(value)
    assert got is None or 0 <= got <= 10**9 or got >= 0


JPEG = F.jpeg(80, 60)
PNG = F.encode(F.photo(80, 60), "PNG")
GIF = F.encode(F.photo(80, 60).convert("P"), "GIF")


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.sampled_from([JPEG, PNG, GIF]), st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=6),
       st.one_of(st.none(), st.integers(0, 10_000)))
def test_validator_never_raises_on_mutated_files(base: bytes, flips: list[tuple[int, int]], cut: int | None) -> None:  # IMG-05, plan 4.2.8
    data = bytearray(base)
    for pos, val in flips:
        data[pos % len(data)] = val
    if cut is not None:
        data = data[: cut % (len(data) + 1)]
    try:
        c = check_bytes(bytes(data))
        assert c.width >= 32 and c.height >= 32
    except ImageRejected as exc:
        assert is_known_reason(exc.reason), exc.reason
