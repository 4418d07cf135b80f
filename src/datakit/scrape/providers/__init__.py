"""Search providers by name: an explicit registry of `Provider` classes.

`get_provider("openverse")` returns the class; the caller builds it from `ProviderSettings`.
"""

from __future__ import annotations

from datakit.errors import ParamsError
from datakit.scrape.providers.base import (
    ApiResponse,
    Hit,
    Page,
    Provider,
    ProviderSettings,
    Query,
    SearchHttp,
    TransientProviderError,
)
from datakit.scrape.providers.bing import BingProvider
from datakit.scrape.providers.brave import BraveProvider
from datakit.scrape.providers.flickr import FlickrProvider
from datakit.scrape.providers.openverse import OpenverseProvider
from datakit.scrape.providers.wikimedia import WikimediaProvider

REGISTRY: dict[str, type[Provider]] = {
    OpenverseProvider.name: OpenverseProvider,
    WikimediaProvider.name: WikimediaProvider,
    BraveProvider.name: BraveProvider,
    FlickrProvider.name: FlickrProvider,
    BingProvider.name: BingProvider,
}

from datakit.scrape.providers.folder import FolderProvider  # noqa: E402
from datakit.scrape.providers.synthetic import SyntheticProvider  # noqa: E402
from datakit.scrape.providers.urls import UrlsProvider  # noqa: E402

for _offline in (SyntheticProvider, FolderProvider, UrlsProvider):
    REGISTRY[_offline.name] = _offline


def get_provider(name: str) -> type[Provider]:
    """The provider class registered as `name`; ParamsError listing the allowed names otherwise."""
    from datakit.params import unknown_key_message

    try:
        return REGISTRY[name]
    except KeyError:
        raise ParamsError(unknown_key_message(name, sorted(REGISTRY), "provider")) from None


__all__ = [
    "REGISTRY",
    "ApiResponse",
    "BingProvider",
    "BraveProvider",
    "FlickrProvider",
    "Hit",
    "OpenverseProvider",
    "Page",
    "Provider",
    "ProviderSettings",
    "Query",
    "SearchHttp",
    "TransientProviderError",
    "WikimediaProvider",
    "get_provider",
]
