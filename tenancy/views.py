"""Console views for accounts, organizations, members and API keys."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from django.views.decorators.http import require_POST

from core.errors import ApplicationError
from core.forms import apply_error
from core.querysets import get_for_org_or_404
from tenancy import permissions, selectors, services
from tenancy.forms import (
    ApiKeyForm,
    EmailAuthenticationForm,
    InviteForm,
    OrgCreateForm,
    RoleForm,
    SignupForm,
    TimeZoneForm,
)
from tenancy.http import ConsoleRequest, membership_or_404
from tenancy.models import ApiKey, Invitation, Membership, Role
from tenancy.selectors import SESSION_ORG_KEY


def login_locked_out(request: HttpRequest, response: HttpResponse | None, credentials: dict | None) -> HttpResponse:
    """django-axes' answer to a refused log-in: the log-in page again, saying why and for how long (429)."""
    minutes = max(1, int(settings.AXES_COOLOFF_TIME.total_seconds() // 60))
    message = ngettext(
        "Too many failed log-ins for this account or from this address. Try again in %(minutes)d minute.",
        "Too many failed log-ins for this account or from this address. Try again in %(minutes)d minutes.",
        minutes,
    ) % {"minutes": minutes}
    # An unbound form: binding it would authenticate again, and count one more failure.
    form = EmailAuthenticationForm(request, initial={"username": request.POST.get("username", "")})
    context = {"form": form, "next": request.POST.get("next", ""), "locked_out": message}
    return render(request, "registration/login.html", context, status=429)


def signup(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        return redirect("catalog:marketplace")
    form = SignupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            user = services.user_signup(
                email=form.cleaned_data["email"], password=form.cleaned_data["password"], name=form.cleaned_data["name"]
            )
        except ApplicationError as exc:
            apply_error(form, exc)
        else:
            login(request, user, backend="django.contrib.auth.backends.ModelBackend")
            messages.success(request, _("Welcome! Your personal organization is ready."))
            next_url = request.GET.get("next")
            if next_url and url_has_allowed_host_and_scheme(next_url, {request.get_host()}):
                return HttpResponseRedirect(next_url)
            return redirect("catalog:marketplace")
    return render(request, "registration/signup.html", {"form": form})


@login_required
@require_POST
def org_switch(request: ConsoleRequest) -> HttpResponse:
    try:
        org_id = uuid.UUID(request.POST.get("org", ""))
    except ValueError:
        raise Http404 from None
    membership = services.membership_choose(user=request.user, org_id=org_id)
    if membership is None:
        raise Http404
    request.session[SESSION_ORG_KEY] = str(membership.org_id)
    next_url = request.POST.get("next") or "/"
    if not url_has_allowed_host_and_scheme(next_url, {request.get_host()}):
        next_url = "/"
    return HttpResponseRedirect(next_url)


@login_required
def org_new(request: ConsoleRequest) -> HttpResponse:
    form = OrgCreateForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            org = services.org_create(
                owner=request.user, name=form.cleaned_data["name"], namespace=form.cleaned_data["namespace"]
            )
        except ApplicationError as exc:
            apply_error(form, exc)
        else:
            services.membership_choose(user=request.user, org_id=org.pk)
            request.session[SESSION_ORG_KEY] = str(org.pk)
            messages.success(request, _("Organization %(name)s created.") % {"name": org.name})
            return redirect("org-members")
    return render(request, "tenancy/org_new.html", {"form": form})


@login_required
def account(request: ConsoleRequest) -> HttpResponse:
    """The signed-in person's own settings: the time zone times are shown in."""
    user = request.user
    if request.method == "POST":
        form = TimeZoneForm(request.POST)
        if form.is_valid():
            try:
                profile = services.profile_set_time_zone(user=user, time_zone=form.cleaned_data["time_zone"])
            except ApplicationError as exc:
                apply_error(form, exc)
            else:
                request.session[selectors.SESSION_TIME_ZONE_KEY] = profile.time_zone
                messages.success(request, _("Your settings are saved."))
                return redirect("account")
    else:
        form = TimeZoneForm(initial={"time_zone": selectors.user_time_zone(user)})
    return render(request, "tenancy/account.html", {"form": form, "now": timezone.now()})


@login_required
def org_members(request: ConsoleRequest) -> HttpResponse:
    membership = membership_or_404(request)
    org = membership.org
    if request.method == "POST" and not permissions.allowed(membership.role, "member.invite"):
        raise PermissionDenied(_("Only owners and admins can manage members."))
    invite_form = InviteForm(request.POST or None) if request.method == "POST" else InviteForm()
    invite_url = None
    if request.method == "POST" and invite_form.is_valid():
        try:
            _inv, invite_url = services.invitation_create(
                org=org,
                actor=request.user,
                email=invite_form.cleaned_data["email"],
                role=invite_form.cleaned_data["role"],
            )
        except ApplicationError as exc:
            apply_error(invite_form, exc)
        else:
            messages.success(request, _("Invitation sent to %(email)s.") % {"email": invite_form.cleaned_data["email"]})
            invite_form = InviteForm()
    context = {
        "members": selectors.org_members(org),
        "invitations": selectors.org_pending_invitations(org),
        "invite_form": invite_form,
        "invite_url": invite_url,
        "can_manage": permissions.allowed(membership.role, "member.invite"),
        "can_set_role": permissions.allowed(membership.role, "member.role"),
        "role_choices": Role.choices,
        "matrix": permissions.matrix(),
    }
    template = "tenancy/partials/members.html" if request.htmx else "tenancy/org_members.html"
    return render(request, template, context)


@login_required
@require_POST
def member_role(request: ConsoleRequest, pk: int) -> HttpResponse:
    membership = get_for_org_or_404(Membership, request.org, pk=pk)
    form = RoleForm(request.POST)
    if form.is_valid():
        try:
            services.membership_set_role(membership=membership, actor=request.user, role=form.cleaned_data["role"])
        except ApplicationError as exc:
            messages.error(request, exc.message)
    return redirect("org-members")


@login_required
@require_POST
def member_remove(request: ConsoleRequest, pk: int) -> HttpResponse:
    membership = get_for_org_or_404(Membership, request.org, pk=pk)
    try:
        services.membership_remove(membership=membership, actor=request.user)
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        if membership.user_id == request.user.pk:
            request.session.pop(SESSION_ORG_KEY, None)
            return redirect("catalog:marketplace")
    return redirect("org-members")


@login_required
@require_POST
def invitation_revoke(request: ConsoleRequest, pk: uuid.UUID) -> HttpResponse:
    invitation = get_for_org_or_404(Invitation, request.org, pk=pk)
    try:
        services.invitation_revoke(invitation=invitation, actor=request.user)
    except ApplicationError as exc:
        messages.error(request, exc.message)
    return redirect("org-members")


def invitation_accept(request: HttpRequest, token: str) -> HttpResponse:
    invitation = services.invitation_for_token(token)
    if invitation is None:
        raise Http404
    if not isinstance(request.user, User):  # anonymous
        return redirect(f"{reverse('login')}?next={request.path}")
    error = None
    if request.method == "POST":
        try:
            membership = services.invitation_accept(token=token, user=request.user)
        except ApplicationError as exc:
            error = exc.message
        else:
            services.membership_choose(user=request.user, org_id=membership.org_id)
            request.session[SESSION_ORG_KEY] = str(membership.org_id)
            messages.success(request, _("You joined %(org)s.") % {"org": membership.org.name})
            return redirect("catalog:marketplace")
    return render(request, "tenancy/invitation_accept.html", {"invitation": invitation, "error": error})


def _apikeys_context(membership: Membership, form: ApiKeyForm, created_key: str | None) -> dict[str, object]:
    return {
        "keys": selectors.org_api_keys(membership.org),
        "form": form,
        "created_key": created_key,
        "can_create": permissions.allowed(membership.role, "apikey.create"),
        "can_revoke": permissions.allowed(membership.role, "apikey.revoke"),
    }


@login_required
def apikeys(request: ConsoleRequest) -> HttpResponse:
    membership = membership_or_404(request)
    org = membership.org
    form = ApiKeyForm(request.POST or None)
    created_key = None
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            _key, created_key = services.apikey_create(
                org=org,
                actor=request.user,
                name=data["name"],
                expires_at=data["expires_at"],
                rpm_limit=data["rpm_limit"],
                tpm_limit=data["tpm_limit"],
                allowed_models=data["allowed_models"],
                spend_cap=data["spend_cap"],
                spend_cap_period=data["spend_cap_period"] or "",
                manage=data["manage"],
            )
        except ApplicationError as exc:
            apply_error(form, exc)
        else:
            form = ApiKeyForm()
    context = _apikeys_context(membership, form, created_key)
    template = "tenancy/partials/apikeys.html" if request.htmx else "tenancy/apikeys.html"
    return render(request, template, context)


@login_required
@require_POST
def apikey_revoke(request: ConsoleRequest, pk: uuid.UUID) -> HttpResponse:
    membership = membership_or_404(request)
    key = get_for_org_or_404(ApiKey, membership.org, pk=pk)
    services.apikey_revoke(key=key, actor=request.user)  # PermissionDenied: Django's 403 page
    messages.success(request, _("Key %(name)s revoked.") % {"name": key.name})
    if request.htmx:
        return render(request, "tenancy/partials/apikeys.html", _apikeys_context(membership, ApiKeyForm(), None))
    return redirect("apikeys")
