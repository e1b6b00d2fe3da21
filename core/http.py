"""The edge of every HTTP request: refusing query strings no view can use, and the error pages.

PostgreSQL cannot hold or compare a NUL character, so a NUL in the path or a query parameter would turn any lookup
into a database error (a 500). :class:`RejectNulMiddleware` refuses such a request with a 400 before a view runs.
The error handlers (400, 404, 500) answer in DRF's JSON shape under ``/api/`` (API clients never get Django's HTML
page, also not for a URL no route matches) and with the console's pages elsewhere (``templates/404.html`` in the
console's frame; ``templates/500.html`` stands alone, as it is rendered with no request context and needs no
database).
"""

from __future__ import annotations

from collections.abc import Callable

from django.core.exceptions import BadRequest
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults

API_PREFIX = "/api/"


class QueryRejected(BadRequest):
    """A request whose path or query string no view can use."""


class RejectNulMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if "\x00" in request.path or any(
            "\x00" in key or "\x00" in value for key, values in request.GET.lists() for value in values
        ):
            raise QueryRejected("The URL holds a NUL character.")
        return self.get_response(request)


def _is_api(request: HttpRequest) -> bool:
    return request.path.startswith(API_PREFIX)


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    if _is_api(request):
        detail = str(exception) if isinstance(exception, QueryRejected) else "Bad request."
        return JsonResponse({"detail": detail, "code": "bad_request"}, status=400)
    return defaults.bad_request(request, exception)


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    if _is_api(request):
        return JsonResponse({"detail": "Not found.", "code": "not_found"}, status=404)
    return defaults.page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    if _is_api(request):
        return JsonResponse({"detail": "A server error occurred.", "code": "server_error"}, status=500)
    return defaults.server_error(request)
