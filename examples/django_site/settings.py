"""A Django site whose workers share one herdcache cache.

Run it under gunicorn with 4 workers (from this directory)::

    gunicorn --workers 4 --bind 127.0.0.1:8000 wsgi:application

``LOCATION`` names the segment: every worker attaches to the same one, so
a value computed by one worker is a hit in the others, and ``get_or_set``
runs a slow query once for all the requests that miss it together.
Without a LOCATION the cache would be anonymous: under gunicorn without
``--preload`` each worker would make its own (herdcache warns,
``PrivateCacheWarning``), and with ``--preload`` it is shared only because
wsgi.py opens it in the master, before the workers fork.
"""

from __future__ import annotations

import os

SECRET_KEY = "herdcache-example-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "urls"
INSTALLED_APPS: list[str] = []
DATABASES: dict[str, object] = {}
USE_TZ = True

CACHES = {
    "default": {
        "BACKEND": "herdcache.contrib.django.HerdcacheCache",
        "LOCATION": os.environ.get("EXAMPLE_CACHE_NAME", "django-example"),
        "TIMEOUT": 300,
        "OPTIONS": {"size": "64MiB", "dir": os.environ.get("EXAMPLE_CACHE_DIR") or None},
    }
}

#: How long the example's "slow query" takes, in seconds.
SLOW_QUERY_SECONDS = float(os.environ.get("EXAMPLE_QUERY_SECONDS", "1.0"))
