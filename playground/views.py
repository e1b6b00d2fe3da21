"""Console pages of the playground: the chat page, conversation rename/delete and "View code"."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST

from core.errors import ApplicationError
from playground import selectors, services, snippets
from playground.models import PARAMETERS, Conversation
from playground.presenters import answer_stats
from playground.rendering import render_markdown


def _conversation_or_404(request, pk) -> Conversation:
    conversation = selectors.get_user_conversation(org=request.org, user=request.user, pk=pk)
    if conversation is None:
        raise Http404
    return conversation


def _parameter_fields(values: dict) -> list[dict]:
    labels = {
        "temperature": _("Temperature"),
        "top_p": _("Top P"),
        "max_tokens": _("Max tokens"),
        "presence_penalty": _("Presence penalty"),
        "frequency_penalty": _("Frequency penalty"),
    }
    fields = []
    for name, (low, high, _default, kind) in PARAMETERS.items():
        fields.append(
            {
                "name": name,
                "label": labels[name],
                "min": low,
                "max": high,
                "value": values[name],
                "step": 1 if kind is int else 0.05,
            }
        )
    return fields


def _page(request, conversation: Conversation | None):
    models = selectors.pickable_models(request.org)
    model_ids = {m["id"] for m in models}
    wanted = request.GET.get("model", "")
    unavailable = wanted if wanted and wanted not in model_ids else ""
    if conversation is not None:
        selected = conversation.model_id
        sampling = conversation.sampling
    elif unavailable:
        selected = ""  # asked for a model that cannot chat here: say so, never switch to another one silently
        sampling = Conversation().sampling
    else:
        selected = wanted or (models[0]["id"] if models else "")
        sampling = Conversation().sampling
    turns, lanes = [], 1
    if conversation is not None:
        lanes = len(conversation.lane_models)
        for turn in selectors.turns(selectors.conversation_messages(conversation), lanes):
            turn["answers"] = [
                {"message": a, "html": render_markdown(a.content), "stats": answer_stats(a)} if a else None
                for a in turn["answers"]
            ]
            turns.append(turn)
    context = {
        "models": models,
        "public_models": [m for m in models if m["public"]],
        "service_models": [m for m in models if not m["public"]],
        "selected_model": selected,
        "unavailable_model": unavailable,
        "unavailable_is_embedding": bool(unavailable) and selectors.is_embedding_model(request.org, unavailable),
        "conversation": conversation,
        "conversations": selectors.user_conversations(org=request.org, user=request.user),
        "turns": turns,
        "lanes": lanes,
        "parameter_fields": _parameter_fields(sampling),
        "i18n_strings": {
            "you": _("You"),
            "ready": _("Ready"),
            "generating": _("Generating…"),
            "waking": _("Starting the model…"),
            "reconnecting": _("Disconnected — reconnecting…"),
        },
    }
    return render(request, "playground/index.html", context)


@login_required
@require_GET
def index(request):
    return _page(request, None)


@login_required
@require_GET
def conversation(request, pk):
    return _page(request, _conversation_or_404(request, pk))


def _list_response(request, current=None):
    return render(
        request,
        "playground/partials/conversations.html",
        {
            "conversations": selectors.user_conversations(org=request.org, user=request.user),
            "current_id": current,
        },
    )


@login_required
@require_GET
def conversation_list(request):
    return _list_response(request, request.GET.get("current"))


@login_required
@require_POST
def conversation_rename(request, pk):
    conversation = _conversation_or_404(request, pk)
    try:
        services.conversation_rename(conversation=conversation, actor=request.user, title=request.POST.get("title", ""))
    except ApplicationError as exc:
        messages.error(request, exc.message)
        if request.htmx:
            response = _list_response(request, str(conversation.pk))
            response.status_code = 422
            response.headers["HX-Reswap"] = "none"
            return response
    if request.htmx:
        return _list_response(request, request.POST.get("current"))
    return redirect("playground:conversation", pk=conversation.pk)


@login_required
@require_POST
def conversation_delete(request, pk):
    conversation = _conversation_or_404(request, pk)
    services.conversation_delete(conversation=conversation, actor=request.user)
    current = request.POST.get("current")
    if request.htmx and current and current != str(pk):
        return _list_response(request, current)
    messages.success(request, _("Conversation deleted."))
    if request.htmx:
        response = _list_response(request, None)
        response.headers["HX-Redirect"] = request.build_absolute_uri(reverse("playground:index"))
        return response
    return redirect("playground:index")


@login_required
@require_GET
def code(request):
    """The current conversation (plus the draft prompt) as a /v1 request in curl, Python and JavaScript."""
    data = request.GET
    model_id = data.get("model", "").strip()
    error = None
    try:
        params = services.clean_params({name: data.get(name) for name in PARAMETERS if name in data})
    except ApplicationError as exc:
        params, error = Conversation().sampling, exc.message
    if not model_id:
        error = _("Pick a model first.")
    conversation = None
    if data.get("conversation"):
        conversation = _conversation_or_404(request, data["conversation"])
    messages_ = []
    system = data.get("system", "")
    if system:
        messages_.append({"role": "system", "content": system})
    if conversation is not None:
        messages_ += [m for m in selectors.lane_history(conversation, 0) if m["role"] != "system"]
    draft = data.get("content", "")
    if draft.strip():
        messages_.append({"role": "user", "content": draft})
    if not any(m["role"] == "user" for m in messages_):
        messages_.append({"role": "user", "content": _("Hello!")})
    context = {
        "error": error,
        "snippets": snippets.conversation_snippets(
            model_id=model_id or "public/<model>", messages=messages_, params=params
        ),
        "base_url": snippets.api_base_url(),
    }
    template = "playground/partials/code.html" if request.htmx else "playground/code.html"
    return render(request, template, context)
