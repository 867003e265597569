"""Flask-Caching on herdcache, in a small Flask app: CACHE_TYPE by the
Flask backend (factory from the app's config) and by the cachelib class
(CACHE_OPTIONS), ``cached`` views, ``memoize`` with delete_memoized, and
herdcache's memoize computing a miss once for a herd of processes."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import flask_caching
import pytest
from flask import Flask, request
from herd_helpers import HANG, after_the_herd_waits, run_herd

from herdcache.contrib.flask import Cache, HerdcacheCache


@pytest.fixture(scope="module")
def segdir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="hc-flask-test-", dir="/dev/shm")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def make_app(segdir: str, cache_class: type = Cache, **config: Any) -> tuple[Flask, Any]:
    """A Flask app with a memoized function and a cached view, each
    counting its calls in the cache itself."""
    app = Flask(__name__)
    app.config.update(
        CACHE_TYPE="herdcache.contrib.flask.HerdcacheCache",
        CACHE_HERDCACHE_NAME="flask",
        CACHE_HERDCACHE_SIZE="8MiB",
        CACHE_OPTIONS={"dir": segdir, "lease": 10, "wait_timeout": 30},
        CACHE_DEFAULT_TIMEOUT=300,
    )
    app.config.update(config)
    cache = cache_class(app)

    @cache.memoize(60)
    def price(sku: str, currency: str = "EUR") -> dict[str, Any]:
        cache.cache.inc(f"calls:price:{sku}")
        return {"sku": sku, "currency": currency, "pid": os.getpid()}

    @app.route("/page")
    @cache.cached(60, query_string=True)
    def page() -> str:
        calls = cache.cache.inc("calls:page")
        return f"page call {calls} for {request.args.get('q', '')}"

    app.price = price  # type: ignore[attr-defined]
    return app, cache


@pytest.fixture
def app(segdir: str) -> Iterator[Flask]:
    flask_app, cache = make_app(segdir)
    with flask_app.app_context():
        yield flask_app
        cache.clear()


def test_the_backend_comes_from_the_apps_config(app: Flask) -> None:
    """CACHE_TYPE names the Flask backend; its factory reads the segment's
    name and size and CACHE_KEY_PREFIX from the config."""
    backend = app.extensions["cache"]
    (herd,) = backend.values()
    assert isinstance(herd, HerdcacheCache)
    assert herd.cache.name == "flask" and herd.key_prefix == "flask_cache_"


def test_cached_view_is_served_from_the_cache(app: Flask) -> None:
    """@cache.cached: the second request does not call the view; another
    query string is another page."""
    client = app.test_client()
    assert client.get("/page?q=a").text == "page call 1 for a"
    assert client.get("/page?q=a").text == "page call 1 for a"
    assert client.get("/page?q=b").text == "page call 2 for b"


def test_memoize_and_delete_memoized(app: Flask) -> None:
    """@cache.memoize: one call per set of arguments (bound to the
    signature), until delete_memoized forgets it."""
    price = app.price  # type: ignore[attr-defined]
    cache = next(iter(app.extensions["cache"].values()))
    first = price("X1")
    assert price("X1") == first and price("X1", "EUR") == first
    assert cache.get("calls:price:X1") == 1
    assert price("X1", "USD")["currency"] == "USD"
    price.delete_memoized()
    price("X1")
    assert cache.get("calls:price:X1") == 3


def test_stock_flask_caching_with_the_cachelib_class(segdir: str) -> None:
    """Flask-Caching's own Cache with CACHE_TYPE set to the cachelib class
    (its options in CACHE_OPTIONS) works too."""
    flask_app, cache = make_app(
        segdir,
        cache_class=flask_caching.Cache,
        CACHE_TYPE="herdcache.contrib.cachelib.HerdcacheCache",
        CACHE_OPTIONS={"name": "flask-stock", "size": "8MiB", "dir": segdir},
    )
    with flask_app.app_context():
        assert cache.cache.cache.name == "flask-stock"
        first = flask_app.price("Y")  # type: ignore[attr-defined]
        assert flask_app.price("Y") == first  # type: ignore[attr-defined]
        assert cache.cache.get("calls:price:Y") == 1
        assert flask_app.test_client().get("/page").text == "page call 1 for "
        cache.clear()


def _herd_member(segdir: str, barrier: Any, results: Any) -> None:
    flask_app, cache = make_app(segdir)
    with flask_app.app_context():

        @cache.memoize(60)
        def slow_report(day: str) -> dict[str, Any]:
            cache.cache.inc("calls:report")
            return after_the_herd_waits(
                cache.cache.cache.stats, barrier.parties, {"day": day, "pid": os.getpid()}, since
            )

        since = cache.cache.cache.stats()["waits"]
        barrier.wait(HANG)
        results.put(slow_report("monday"))


def test_memoize_computes_once_for_a_herd_of_processes(app: Flask, segdir: str) -> None:
    """6 forked workers call a memoized function with the same arguments at
    once: it runs once, all get its result (Flask-Caching's own memoize
    runs it in each)."""
    values = run_herd(_herd_member, 6, segdir)
    cache = next(iter(app.extensions["cache"].values()))
    assert cache.get("calls:report") == 1
    assert len({value["pid"] for value in values}) == 1
