"""Shared pieces of the management API (/api/): error mapping, paging and query-parameter validation.

Every query parameter is checked before it reaches SQL: paging by :class:`Pagination` (bounded integers), filters by
a serializer passed to :func:`validated_query`; a bad value is a 400 in DRF's shape, never a database error. A NUL
character anywhere in the query string is refused earlier still, for every page, by ``core.http``.
"""

from __future__ import annotations

from typing import Any

from django.http import Http404
from rest_framework import serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from core.errors import ApplicationError


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, ApplicationError):
        body: dict[str, Any] = {"detail": exc.message, "code": exc.code}
        if exc.field:
            body["field"] = exc.field
        return Response(body, status=exc.status)
    if isinstance(exc, Http404):
        return Response({"detail": "Not found.", "code": "not_found"}, status=status.HTTP_404_NOT_FOUND)
    return drf_exception_handler(exc, context)


def _bounded_int(name: str, raw: str, low: int, high: int) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise ValidationError({name: [f"Must be an integer from {low} to {high}."]})
    return value


class Pagination(LimitOffsetPagination):
    """Limit/offset paging that answers 400 for a limit or offset it cannot honour instead of passing it to SQL."""

    max_limit = 1000
    max_offset = 1_000_000_000

    def get_limit(self, request: Request) -> int | None:
        raw = request.query_params.get(self.limit_query_param)
        if raw is None:
            return self.default_limit
        return _bounded_int(self.limit_query_param, raw, 1, self.max_limit)

    def get_offset(self, request: Request) -> int:
        raw = request.query_params.get(self.offset_query_param)
        if raw is None:
            return 0
        return _bounded_int(self.offset_query_param, raw, 0, self.max_offset)


def validated_query(request: Request, serializer_class: type[serializers.Serializer]) -> dict[str, Any]:
    """The request's query parameters checked by ``serializer_class``; a bad one raises DRF's 400."""
    query = serializer_class(data=request.query_params)
    query.is_valid(raise_exception=True)
    return dict(query.validated_data)
