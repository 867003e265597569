"""Views of the example site.

``/report/<id>/``: a slow query behind ``cache.get_or_set``; concurrent
requests for a missing report, in any worker, run the query once.
``/page/``: a page cached whole by ``@cache_page``.
``/stats/``: how many queries ran, and herdcache's counters.
"""

from __future__ import annotations

import os
import time

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path
from django.views.decorators.cache import cache_page


def slow_query(report_id: int) -> dict[str, object]:
    """Stands for an expensive database query."""
    cache.cache.segment.counter("queries").add(1)
    time.sleep(settings.SLOW_QUERY_SECONDS)
    return {"report": report_id, "total": report_id * 1000, "computed_by": os.getpid()}


def report(request: HttpRequest, report_id: int) -> JsonResponse:
    """A report computed once for every worker, then served from the cache."""
    data = cache.get_or_set(f"report:{report_id}", lambda: slow_query(report_id), timeout=60)
    return JsonResponse({**data, "served_by": os.getpid()})


@cache_page(60)
def page(request: HttpRequest) -> HttpResponse:
    """A page rendered once a minute, whichever worker gets the request."""
    return HttpResponse(f"rendered by {os.getpid()} at {time.time():.6f}")


def stats(request: HttpRequest) -> JsonResponse:
    """Queries run so far, and the cache's counters summed over workers."""
    counters = cache.cache.stats()
    wanted = ("hits", "misses", "computes", "waits", "coalesced", "entries")
    return JsonResponse(
        {"queries": cache.cache.segment.counter("queries").load(), **{k: counters[k] for k in wanted}}
    )


urlpatterns = [
    path("report/<int:report_id>/", report),
    path("page/", page),
    path("stats/", stats),
]
