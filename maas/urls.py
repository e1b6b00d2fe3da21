from pathlib import Path

from django.contrib import admin
from django.contrib.auth.views import LoginView
from django.http import FileResponse, HttpRequest
from django.urls import include, path
from django.views.decorators.http import require_safe
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView

import gateway
from maas.views import ApiDocsView, ApiRootView, favicon
from tenancy import views
from tenancy.forms import EmailAuthenticationForm

V1_DOCUMENT = Path(gateway.__file__).parent / "openapi.yaml"


@require_safe
def v1_schema(request: HttpRequest) -> FileResponse:
    """The hand-written OpenAPI document of /v1 (the gateway is no Django view, so nothing generates it)."""
    return FileResponse(V1_DOCUMENT.open("rb"), content_type="application/yaml; charset=utf-8")


urlpatterns = [
    path("", RedirectView.as_view(pattern_name="catalog:marketplace", permanent=False)),
    path("admin/", admin.site.urls),
    path("accounts/signup/", views.signup, name="signup"),
    path("accounts/login/", LoginView.as_view(authentication_form=EmailAuthenticationForm), name="login"),
    path("accounts/", include("django.contrib.auth.urls")),
    path("i18n/", include("django.conf.urls.i18n")),
    path("account/", views.account, name="account"),
    path("org/switch/", views.org_switch, name="org-switch"),
    path("org/new/", views.org_new, name="org-new"),
    path("org/members/", views.org_members, name="org-members"),
    path("org/members/<int:pk>/role/", views.member_role, name="member-role"),
    path("org/members/<int:pk>/remove/", views.member_remove, name="member-remove"),
    path("org/invitations/<uuid:pk>/revoke/", views.invitation_revoke, name="invitation-revoke"),
    path("invitations/<str:token>/", views.invitation_accept, name="invitation-accept"),
    path("keys/", views.apikeys, name="apikeys"),
    path("keys/<uuid:pk>/revoke/", views.apikey_revoke, name="apikey-revoke"),
    path("models/", include("catalog.urls")),
    path("billing/usage/", include("metering.urls")),
    path("billing/", include("billing.urls")),
    path("playground/", include("playground.urls")),
    path("", include("deployments.urls")),
    path("favicon.ico", favicon, name="favicon"),
    path("api/", ApiRootView.as_view(), name="api-root"),
    path("api/", include("maas.api_urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", ApiDocsView.as_view(url_name="api-schema"), name="api-docs"),
    path("api/schema/v1/", v1_schema, name="v1-schema"),
]

handler400 = "core.http.bad_request"
handler404 = "core.http.not_found"
handler500 = "core.http.server_error"
