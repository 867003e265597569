"""Settings of the test project: every cache alias is the same herdcache
segment, seen through Django's key options (prefix, version, key function)."""

from __future__ import annotations

import tempfile

SEGMENT_DIR = tempfile.mkdtemp(prefix="hc-django-test-", dir="/dev/shm")
SEGMENT = "django"


def custom_key_func(key: str, key_prefix: str, version: int) -> str:
    """A KEY_FUNCTION other than Django's."""
    return "CUSTOM-" + "-".join([key_prefix, str(version), key])


def _cache(**params: object) -> dict[str, object]:
    base: dict[str, object] = {
        "BACKEND": "herdcache.contrib.django.HerdcacheCache",
        "LOCATION": SEGMENT,
        "OPTIONS": {"size": "16MiB", "dir": SEGMENT_DIR, "lease": 10, "wait_timeout": 30},
    }
    base.update(params)
    return base


CACHES = {
    "default": _cache(),
    "prefix": _cache(KEY_PREFIX="cacheprefix"),
    "v2": _cache(VERSION=2),
    "custom_key": _cache(KEY_FUNCTION=custom_key_func),
    "custom_key2": _cache(KEY_FUNCTION="django_project.settings.custom_key_func"),
    "forever": _cache(TIMEOUT=None),
}

SECRET_KEY = "herdcache-tests"
DEBUG = False
ALLOWED_HOSTS = ["testserver"]
INSTALLED_APPS: list[str] = []
DATABASES: dict[str, object] = {}
ROOT_URLCONF = "django_project.urls"
MIDDLEWARE: list[str] = []
USE_TZ = True
CACHE_MIDDLEWARE_SECONDS = 60
CACHE_MIDDLEWARE_KEY_PREFIX = "site"
