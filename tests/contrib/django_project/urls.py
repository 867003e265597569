"""Views for the middleware and @cache_page tests: each counts its calls
in the cache itself, so a test sees whether a response came from the view."""

from __future__ import annotations

from django.core.cache import cache
from django.http import HttpRequest, HttpResponse
from django.urls import path
from django.views.decorators.cache import cache_page


def _counted(name: str, request: HttpRequest) -> HttpResponse:
    cache.add(f"calls:{name}", 0, None)
    calls = cache.incr(f"calls:{name}")
    response = HttpResponse(f"{name} call {calls} for {request.GET.get('q', '')}")
    response.set_cookie("flavour", "oat")
    return response


def plain(request: HttpRequest) -> HttpResponse:
    """A view the site-wide cache middleware caches."""
    return _counted("plain", request)


@cache_page(60)
def decorated(request: HttpRequest) -> HttpResponse:
    """A view cached by @cache_page."""
    return _counted("decorated", request)


urlpatterns = [path("plain/", plain), path("decorated/", decorated)]
