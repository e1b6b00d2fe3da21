"""Writes for the playground: conversations (create, settings, rename, delete), prompts and recorded answers."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from core.errors import ApplicationError, PermissionDenied
from playground import selectors
from playground.models import (
    MESSAGE_MAX,
    PARAMETERS,
    SYSTEM_PROMPT_MAX,
    TITLE_MAX,
    AnswerStatus,
    Conversation,
    Message,
    Role,
)
from tenancy.permissions import require
from tenancy.services import audit_record

UNTITLED_LENGTH = 60


def clean_params(raw) -> dict:
    """Sampling parameters from a client, checked against their ranges; unknown names are an error."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ApplicationError(_("Parameters must be an object."), field="params")
    cleaned: dict = {}
    for name, value in raw.items():
        if name not in PARAMETERS:
            raise ApplicationError(_("Unknown parameter “%(name)s”.") % {"name": name}, field=name)
        if value is None or value == "":
            continue
        low, high, _default, kind = PARAMETERS[name]
        try:
            if isinstance(value, bool):
                raise ValueError
            amount = Decimal(str(value))
            if not amount.is_finite():
                raise ValueError
            number: int | float
            if kind is int:
                if amount != amount.to_integral_value():
                    raise ValueError
                number = int(amount)
            else:
                number = float(amount)
        except (ValueError, InvalidOperation):
            raise ApplicationError(_("%(name)s must be a number.") % {"name": name}, field=name) from None
        if not (low <= number <= high):
            raise ApplicationError(
                _("%(name)s must be between %(low)s and %(high)s.") % {"name": name, "low": low, "high": high},
                field=name,
            )
        cleaned[name] = number
    return cleaned


def _check_model(org, model_id: str, *, field: str) -> str:
    model_id = (model_id or "").strip()
    if not model_id:
        raise ApplicationError(_("Pick a model."), field=field)
    if model_id not in {m["id"] for m in selectors.pickable_models(org)}:
        raise ApplicationError(
            _("The model “%(model)s” is not available to this organization now.") % {"model": model_id[:200]},
            field=field,
            code="model_not_found",
            status=404,
        )
    return model_id


def _check_text(value, *, limit: int, field: str, required: bool) -> str:
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise ApplicationError(_("Text expected."), field=field)
    if required and not value.strip():
        raise ApplicationError(_("Write a message first."), field=field)
    if len(value) > limit:
        raise ApplicationError(_("At most %(limit)s characters.") % {"limit": limit}, field=field)
    return value


def _title_from(content: str) -> str:
    first = " ".join(content.split())
    return (first[:UNTITLED_LENGTH] + "…") if len(first) > UNTITLED_LENGTH else (first or _("New conversation"))


def _settings(org, *, model_id, compare_model_id, system_prompt, params) -> dict:
    model_id = _check_model(org, model_id, field="model")
    compare_model_id = _check_model(org, compare_model_id, field="compare_model") if compare_model_id else ""
    if compare_model_id == model_id:
        raise ApplicationError(_("Pick two different models to compare."), field="compare_model")
    return {
        "model_id": model_id,
        "compare_model_id": compare_model_id,
        "system_prompt": _check_text(system_prompt, limit=SYSTEM_PROMPT_MAX, field="system", required=False),
        "params": clean_params(params),
    }


@transaction.atomic
def conversation_start(
    *,
    org,
    user,
    model_id: str,
    content: str,
    compare_model_id: str = "",
    system_prompt: str = "",
    params: dict | None = None,
) -> tuple[Conversation, Message]:
    """A new conversation with its first prompt, titled after that prompt."""
    require(user, org, "playground.use")
    fields = _settings(
        org, model_id=model_id, compare_model_id=compare_model_id, system_prompt=system_prompt, params=params
    )
    content = _check_text(content, limit=MESSAGE_MAX, field="content", required=True)
    conversation = Conversation.objects.create(org=org, user=user, title=_title_from(content)[:TITLE_MAX], **fields)
    prompt = Message.objects.create(conversation=conversation, role=Role.USER, content=content)
    audit_record(
        org=org,
        actor=user,
        action="conversation.create",
        target=conversation,
        data={"model": conversation.model_id, "compare_model": conversation.compare_model_id},
    )
    return conversation, prompt


@transaction.atomic
def conversation_continue(
    *,
    conversation: Conversation,
    model_id: str,
    content: str,
    compare_model_id: str = "",
    system_prompt: str = "",
    params: dict | None = None,
) -> Message:
    """The next prompt of a conversation, with the settings the user has now (model, system prompt, sampling)."""
    fields = _settings(
        conversation.org,
        model_id=model_id,
        compare_model_id=compare_model_id,
        system_prompt=system_prompt,
        params=params,
    )
    content = _check_text(content, limit=MESSAGE_MAX, field="content", required=True)
    conversation = Conversation.objects.select_for_update().get(pk=conversation.pk)
    for name, value in fields.items():
        setattr(conversation, name, value)
    conversation.updated_at = timezone.now()
    conversation.save(update_fields=[*fields, "updated_at"])
    return Message.objects.create(conversation=conversation, role=Role.USER, content=content)


@transaction.atomic
def conversation_regenerate(
    *,
    conversation: Conversation,
    model_id: str,
    compare_model_id: str = "",
    system_prompt: str = "",
    params: dict | None = None,
) -> Message:
    """Drop the answers to the last prompt so they can be generated again; returns that prompt."""
    fields = _settings(
        conversation.org,
        model_id=model_id,
        compare_model_id=compare_model_id,
        system_prompt=system_prompt,
        params=params,
    )
    conversation = Conversation.objects.select_for_update().get(pk=conversation.pk)
    last_prompt = conversation.messages.filter(role=Role.USER).order_by("-id").first()
    if last_prompt is None:
        raise ApplicationError(_("There is nothing to regenerate yet."), code="empty")
    conversation.messages.filter(id__gt=last_prompt.id).delete()
    for name, value in fields.items():
        setattr(conversation, name, value)
    conversation.updated_at = timezone.now()
    conversation.save(update_fields=[*fields, "updated_at"])
    return last_prompt


def _require_own(conversation: Conversation, actor) -> None:
    """Conversations are private: only the member who started one may change it."""
    require(actor, conversation.org, "playground.use")
    if actor is not None and conversation.user_id != getattr(actor, "pk", None):
        raise PermissionDenied(_("Only the member who started this conversation may change it."))


@transaction.atomic
def conversation_rename(*, conversation: Conversation, actor, title: str) -> Conversation:
    _require_own(conversation, actor)
    title = " ".join((title or "").split())
    if not title:
        raise ApplicationError(_("A conversation needs a title."), field="title")
    if len(title) > TITLE_MAX:
        raise ApplicationError(_("At most %(limit)s characters.") % {"limit": TITLE_MAX}, field="title")
    old = conversation.title
    conversation.title = title
    conversation.save(update_fields=["title"])
    audit_record(
        org=conversation.org,
        actor=actor,
        action="conversation.rename",
        target=conversation,
        data={"from": old, "to": title},
    )
    return conversation


@transaction.atomic
def conversation_delete(*, conversation: Conversation, actor) -> None:
    _require_own(conversation, actor)
    audit_record(
        org=conversation.org,
        actor=actor,
        action="conversation.delete",
        target=conversation,
        data={"title": conversation.title},
    )
    conversation.delete()


@transaction.atomic
def answer_record(
    *,
    conversation: Conversation,
    lane: int,
    model_id: str,
    content: str,
    status: str,
    finish_reason: str = "",
    error_code: str = "",
    error_message: str = "",
    prompt_tokens: int | None = None,
    completion_tokens: int | None = None,
    ttft_ms: int | None = None,
    latency_ms: int | None = None,
    cost: Decimal | None = None,
    currency: str = "",
    request_id: str = "",
    replica: str = "",
) -> Message:
    """Store one lane's answer to the latest prompt, whether complete, stopped or failed."""
    if status not in AnswerStatus.values:
        raise ApplicationError(f"unknown answer status {status!r}")
    answer = Message.objects.create(
        conversation=conversation,
        role=Role.ASSISTANT,
        lane=lane,
        model_id=model_id,
        content=content,
        status=status,
        finish_reason=finish_reason[:32],
        error_code=error_code[:64],
        error_message=error_message,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        ttft_ms=ttft_ms,
        latency_ms=latency_ms,
        cost=cost,
        currency=currency,
        request_id=request_id[:64],
        replica=replica[:253],
    )
    Conversation.objects.filter(pk=conversation.pk).update(updated_at=timezone.now())
    return answer
