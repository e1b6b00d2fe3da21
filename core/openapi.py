"""The /api/ OpenAPI schema's shared error answers, added to every operation by one drf-spectacular hook.

The error bodies are the ones ``core.api.exception_handler`` and ``core.http`` write: ``{"detail", "code", "field"}``
(:data:`ERROR`; DRF's own refusals, such as a missing credential or a malformed JSON body, carry ``detail`` only) and
DRF's field map for a serializer's refusal (:data:`VALIDATION_ERROR`, ``{"limit": ["Must be ..."]}``).

Which operation may answer what follows from the edge, not from each view, so :func:`error_responses` adds it:
400 everywhere (a NUL in the URL is refused before any view), 401 everywhere (an invalid ``sk-`` key is refused even
where no credential is needed), 403 where a credential is needed or the method writes (roles, key scopes, CSRF), and
404 where the path names an object. Answers that only some operations give (402, 409) are declared on those views
with :func:`error_response`.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiResponse

ERROR_REF = {"$ref": "#/components/schemas/Error"}
VALIDATION_ERROR_REF = {"$ref": "#/components/schemas/ValidationError"}

ERROR: dict[str, Any] = {
    "type": "object",
    "description": "An error: a readable message, a stable code and, when one field is at fault, its name.",
    "properties": {
        "detail": {"type": "string"},
        "code": {"type": "string"},
        "field": {"type": "string"},
    },
    "required": ["detail"],
}
VALIDATION_ERROR: dict[str, Any] = {
    "type": "object",
    "description": "Refused input: each field at fault (or non_field_errors) with its messages.",
    "additionalProperties": {"type": "array", "items": {"type": "string"}},
}

_JSON = "application/json"
_WRITES = frozenset({"post", "put", "patch", "delete"})
_METHODS = _WRITES | {"get", "head", "options"}
_DESCRIPTIONS = {
    "400": "Bad request: a malformed URL, query parameter or body.",
    "401": "The credential is missing, invalid, revoked or expired.",
    "403": "The member's role or the key's scope does not allow this.",
    "404": "No such object in the organization.",
}


def error_response(description: str) -> OpenApiResponse:
    """An answer in the shared error shape, for ``extend_schema(responses={409: error_response("...")})``."""
    return OpenApiResponse(response=ERROR_REF, description=description)


def _body(ref: dict[str, Any], code: str) -> dict[str, Any]:
    return {"description": _DESCRIPTIONS[code], "content": {_JSON: {"schema": ref}}}


def error_responses(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """drf-spectacular postprocessing hook: the error components, and the errors every operation may answer."""
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    schemas["Error"] = ERROR
    schemas["ValidationError"] = VALIDATION_ERROR
    for path, operations in result.get("paths", {}).items():
        for method, operation in operations.items():
            if method not in _METHODS:
                continue
            responses = operation.setdefault("responses", {})
            responses.setdefault("400", _body({"anyOf": [ERROR_REF, VALIDATION_ERROR_REF]}, "400"))
            responses.setdefault("401", _body(ERROR_REF, "401"))
            anonymous = {} in operation.get("security", [])
            if method in _WRITES or not anonymous:
                responses.setdefault("403", _body(ERROR_REF, "403"))
            if "{" in path:
                responses.setdefault("404", _body(ERROR_REF, "404"))
    return result
