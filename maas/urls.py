from csp.decorators import csp_exempt
from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView

from tenancy import views

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="catalog:marketplace", permanent=False)),
    path("admin/", admin.site.urls),
    path("accounts/signup/", views.signup, name="signup"),
    path("accounts/", include("django.contrib.auth.urls")),
    path("i18n/", include("django.conf.urls.i18n")),
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
    path("api/", include("maas.api_urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    # Redoc is a third-party page (a CDN script, inline bootstrapping and styles): outside the console's CSP.
    path("api/docs/", csp_exempt()(SpectacularRedocView.as_view(url_name="api-schema")), name="api-docs"),
]

handler400 = "core.http.bad_request"
handler500 = "core.http.server_error"
