"""WSGI entry point: ``gunicorn --workers 4 wsgi:application``."""

from __future__ import annotations

import os

from django.core.cache import cache
from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings")
application = get_wsgi_application()

# Open the cache now: with --preload that is in gunicorn's master, so even
# an anonymous cache (no LOCATION) would be inherited by every worker.
cache.cache  # noqa: B018
