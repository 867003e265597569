"""Fixtures of the framework backend tests: a configured Django test
project (``django_project``), set up once for the session, whose caches
live in a private directory removed at the end."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import django
import pytest

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "django_project.settings")
django.setup()


@pytest.fixture(scope="session", autouse=True)
def _remove_django_segments() -> Iterator[None]:
    from django_project.settings import SEGMENT_DIR

    yield
    shutil.rmtree(SEGMENT_DIR, ignore_errors=True)
