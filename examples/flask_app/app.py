"""A Flask app whose gunicorn workers share one cache through Flask-Caching.

Run it with 4 workers (from this directory)::

    gunicorn --workers 4 --bind 127.0.0.1:8000 app:app

``@cache.memoize`` computes a missing result once for every worker: the
requests that miss it together, in any worker, wait for that computation.
``CACHE_HERDCACHE_NAME`` names the segment every worker attaches to.  Set
it to nothing (``EXAMPLE_CACHE_NAME=``) and the cache is anonymous: without
``--preload`` each worker then makes its own and herdcache warns
(``PrivateCacheWarning``); with ``--preload`` the master makes it before
forking and the workers share it.
"""

from __future__ import annotations

import os
import time

from flask import Flask, jsonify

from herdcache.contrib.flask import Cache

app = Flask(__name__)
app.config.update(
    CACHE_TYPE="herdcache.contrib.flask.HerdcacheCache",
    CACHE_HERDCACHE_NAME=os.environ.get("EXAMPLE_CACHE_NAME", "flask-example") or None,
    CACHE_HERDCACHE_SIZE="64MiB",
    CACHE_OPTIONS={"dir": os.environ.get("EXAMPLE_CACHE_DIR") or None},
    CACHE_DEFAULT_TIMEOUT=300,
)
cache = Cache(app)
SLOW_SECONDS = float(os.environ.get("EXAMPLE_QUERY_SECONDS", "1.0"))


@cache.memoize(60)
def exchange_rate(currency: str) -> dict[str, object]:
    """Stands for a slow call to another service."""
    cache.cache.inc("calls:exchange_rate")
    time.sleep(SLOW_SECONDS)
    return {"currency": currency, "rate": 1.08, "computed_by": os.getpid()}


@app.route("/rate/<currency>")
def rate(currency: str):
    """The rate, computed once for all workers, then from the cache."""
    return jsonify({**exchange_rate(currency), "served_by": os.getpid()})


@app.route("/stats")
def stats():
    """How many times the slow call ran, and the cache's counters."""
    counters = cache.cache.cache.stats()
    return jsonify(calls=cache.cache.get("calls:exchange_rate") or 0, waits=counters["waits"], pid=os.getpid())
