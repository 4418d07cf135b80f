"""One place removes API keys from what a search API sends back (issue 13 B3/B11, SEC-08)."""

from __future__ import annotations

from urllib.parse import quote, quote_plus

from datakit.scrape.providers.base import ApiResponse, Hit
from datakit.scrape.secrets import URL_MARK, redact, scrub_hit

KEY = "k3y/with+odd=chars"


def test_every_encoding_of_the_key_is_redacted() -> None:
    text = f"raw {KEY} path {quote(KEY, safe='')} form {quote_plus(KEY)} slash {quote(KEY)}"
    out = redact(text, [KEY])
    assert out == "raw *** path *** form *** slash ***"
    assert redact("a key of 2 chars: ab", ["ab"]) == "a key of 2 chars: ab"  # too short to be a key


def test_response_snippet_never_quotes_the_key() -> None:
    resp = ApiResponse(500, {}, f"error: token {quote_plus(KEY)} refused\n".encode(), "http://api/x", (KEY,))
    assert resp.snippet() == "error: token *** refused"
    try:
        resp.json()
    except Exception as exc:  # noqa: BLE001 - the message is what is checked
        assert KEY not in str(exc) and quote_plus(KEY) not in str(exc) and "***" in str(exc)
    else:
        raise AssertionError("a non-JSON body parsed")


def test_hit_with_the_key_is_scrubbed_and_marked() -> None:
    hit = Hit(url=f"https://img.example/a.jpg?api_key={quote(KEY, safe='')}", title=f"echo {KEY}",
              page_url="https://img.example/page")
    assert scrub_hit(hit, [KEY])
    assert hit.url == f"https://img.example/a.jpg?api_key={URL_MARK}"
    assert hit.title == "echo ***" and hit.page_url == "https://img.example/page"
    clean = Hit(url="https://img.example/b.jpg")
    assert not scrub_hit(clean, [KEY]) and clean.url == "https://img.example/b.jpg"
