"""Django's cache middleware and @cache_page on herdcache: whole
responses (HttpResponse objects with their cookies, pickled) are served
from the shared cache, and the view is not called again."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.core.cache import cache
from django.test import Client, override_settings

SITE_CACHE = [
    "django.middleware.cache.UpdateCacheMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.cache.FetchFromCacheMiddleware",
]


@pytest.fixture(autouse=True)
def _cleared() -> Iterator[None]:
    cache.clear()
    yield
    cache.clear()


def _get(path: str) -> tuple[str, str]:
    response = Client().get(path)
    assert response.status_code == 200
    return response.content.decode(), response.cookies["flavour"].value


def test_cache_page_serves_the_stored_response() -> None:
    """@cache_page: the second request is the first response, from the
    cache, cookie included; another query string is another page."""
    assert _get("/decorated/?q=a") == ("decorated call 1 for a", "oat")
    assert _get("/decorated/?q=a") == ("decorated call 1 for a", "oat")
    assert _get("/decorated/?q=b") == ("decorated call 2 for b", "oat")
    assert cache.get("calls:decorated") == 2
    cache.clear()
    assert _get("/decorated/?q=a") == ("decorated call 1 for a", "oat")


@override_settings(MIDDLEWARE=SITE_CACHE)
def test_the_site_wide_cache_middleware() -> None:
    """UpdateCacheMiddleware/FetchFromCacheMiddleware store the page once
    and serve it after, until it is removed from the cache."""
    assert _get("/plain/?q=x") == ("plain call 1 for x", "oat")
    assert _get("/plain/?q=x") == ("plain call 1 for x", "oat")
    assert cache.get("calls:plain") == 1
    page_keys = cache.keys("views.decorators.cache.cache_page.*")
    assert page_keys, "the middleware stored no page under its key prefix"
    assert cache.delete_pattern("views.decorators.cache.*") >= 1
    assert _get("/plain/?q=x") == ("plain call 2 for x", "oat")
