"""DRF authentication by ``Authorization: Bearer sk-...`` API keys."""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext_lazy as _
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from tenancy.models import ApiKey
from tenancy.selectors import apikey_by_plaintext


class ApiKeyUser:
    """The principal of a request authenticated by an API key: acts for the key's organization only."""

    is_authenticated = True
    is_anonymous = False
    is_active = True
    is_staff = False
    is_superuser = False

    def __init__(self, key: ApiKey) -> None:
        self.key = key
        self.pk = None
        self.id = None
        self.username = f"apikey:{key.prefix}"
        self.created_by = key.created_by

    def __str__(self) -> str:
        return self.username


class ApiKeyAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[ApiKeyUser, ApiKey] | None:
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header:
            return None
        parts = header.split()
        if len(parts) != 2 or parts[0] != self.keyword or not parts[1].startswith("sk-"):
            return None
        key = apikey_by_plaintext(parts[1])
        if key is None:
            raise exceptions.AuthenticationFailed(_("Invalid, revoked or expired API key."))
        request._request.api_org = key.org  # type: ignore[attr-defined]
        request._request.api_key = key  # type: ignore[attr-defined]
        return ApiKeyUser(key), key

    def authenticate_header(self, request: Request) -> str:
        return self.keyword


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "tenancy.authentication.ApiKeyAuthentication"
    name = "ApiKeyAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {"type": "http", "scheme": "bearer", "bearerFormat": "sk-..."}
