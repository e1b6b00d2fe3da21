"""The playground's WebSocket: prompts in, answers streamed token by token through the gateway core.

Protocol (JSON text frames). Client → server:

- ``{"type": "send", "conversation": <id or null>, "model", "compare_model", "system", "params", "content"}``
- ``{"type": "regenerate", "conversation": <id>, "model", "compare_model", "system", "params"}``
- ``{"type": "stop"}``: abort the answers being generated (upstream generation stops; streamed tokens are billed)

Server → client: ``conversation`` (id, title, url; once per send), ``start`` (lane, model), ``delta`` (lane,
text), ``waking`` (lane, model: the model had scaled to zero and the request waits while it starts; "starting the
model…"), ``done`` (lane, status, sanitized ``html``, ``stats``), ``error`` (lane or null, code, message) and
``idle`` once every lane has finished. Lane 0 answers with ``model``; lane 1 with ``compare_model`` (compare mode).

Every answer goes through ``gateway.core.chat_stream`` — the same routing, limits, metering and billing as ``/v1``,
recorded as usage with source "playground".
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import TypedDict

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from django.http.cookie import parse_cookie
from django.urls import reverse
from django.utils import translation
from django.utils.translation import gettext as _
from django.utils.translation.trans_real import parse_accept_lang_header

from core.errors import ApplicationError
from playground import selectors, services
from playground.models import AnswerStatus, Conversation
from playground.presenters import answer_stats, answer_stats_html
from playground.rendering import render_markdown
from tenancy.selectors import current_membership

logger = logging.getLogger(__name__)

# Close codes for refused connections (4000–4999 are the application's).
CLOSE_UNAUTHENTICATED = 4401
CLOSE_NO_ORG = 4403


class _Choices(TypedDict):
    """What a send or regenerate frame chose, as received: the services validate every value."""

    model_id: str
    compare_model_id: str
    system_prompt: str
    params: dict


@dataclass
class LaneState:
    lane: int
    model_id: str
    parts: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    first_token_at: float | None = None
    finish_reason: str = ""
    summary: dict | None = None
    chunks: int = 0  # content chunks received: one token each, as the gateway meters a stopped stream

    @property
    def text(self) -> str:
        return "".join(self.parts)


def _org_for(user, session):
    membership = current_membership(user, session)
    return membership.org if membership else None


def _language_of(scope) -> str:
    """The console language for this socket: the language cookie, else the browser's Accept-Language."""
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
    cookies = parse_cookie(headers.get("cookie", ""))
    for candidate in [cookies.get(settings.LANGUAGE_COOKIE_NAME, "")] + [
        lang for lang, _q in parse_accept_lang_header(headers.get("accept-language", ""))
    ]:
        if not candidate or candidate == "*":
            continue
        try:
            return translation.get_supported_language_variant(candidate)
        except LookupError:
            continue
    return settings.LANGUAGE_CODE


def _decimal_or_none(value) -> Decimal | None:
    if value in (None, ""):
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


class PlaygroundConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self):
        self.user = self.scope.get("user")
        self.lanes: dict[int, asyncio.Task] = {}
        self.streams: dict[int, asyncio.Task] = {}
        self.turn: asyncio.Task | None = None
        if self.user is None or not self.user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        self.org = await database_sync_to_async(_org_for)(self.user, self.scope.get("session"))
        if self.org is None:
            await self.close(code=CLOSE_NO_ORG)
            return
        self.language = _language_of(self.scope)
        await self.accept()

    async def disconnect(self, code):
        # The browser went away: abort upstream generation, but let each lane record what it streamed.
        for task in list(self.streams.values()):
            task.cancel()
        if self.turn is not None:
            await asyncio.gather(self.turn, return_exceptions=True)

    async def _send(self, payload: dict):
        try:
            await self.send_json(payload)
        except Exception:  # the socket closed under us; the answer is still recorded
            logger.debug("playground socket closed before %s could be sent", payload.get("type"))

    async def _error(self, message: str, *, code: str = "invalid", lane=None, field_name=None):
        await self._send({"type": "error", "lane": lane, "code": code, "message": message, "field": field_name})

    async def receive_json(self, content, **kwargs):
        # Answers' tasks start inside this block and keep its language (translation state is context-local).
        with translation.override(self.language):
            await self._handle(content)

    async def _handle(self, content):
        if not isinstance(content, dict):
            await self._error(_("Malformed message."))
            return
        kind = content.get("type")
        if kind == "stop":
            for task in list(self.streams.values()):
                task.cancel()
            return
        if kind not in ("send", "regenerate"):
            await self._error(_("Unknown message type."))
            return
        if self.turn is not None and not self.turn.done():
            await self._error(_("Wait for the current answer to finish, or stop it."), code="busy")
            return
        try:
            conversation, created = await database_sync_to_async(self._prepare)(kind, content)
        except ApplicationError as exc:
            await self._error(exc.message, code=exc.code, field_name=exc.field)
            return
        await self._send(
            {
                "type": "conversation",
                "id": str(conversation.pk),
                "title": conversation.title,
                "created": created,
                "url": reverse("playground:conversation", args=[conversation.pk]),
                "compare": conversation.compare,
            }
        )
        histories = await database_sync_to_async(self._histories)(conversation)
        self.turn = asyncio.ensure_future(self._run_turn(conversation, histories))

    def _prepare(self, kind: str, content: dict) -> tuple[Conversation, bool]:
        model, compare_model = content.get("model"), content.get("compare_model")
        choices: _Choices = {
            "model_id": model if isinstance(model, str) else "",
            "compare_model_id": compare_model if isinstance(compare_model, str) else "",
            "system_prompt": content.get("system") or "",
            "params": content.get("params") or {},
        }
        conversation_id = content.get("conversation")
        conversation = None
        if conversation_id:
            conversation = selectors.get_user_conversation(org=self.org, user=self.user, pk=conversation_id)
            if conversation is None:
                raise ApplicationError(
                    _("This conversation does not exist (or belongs to someone else)."), code="not_found", status=404
                )
        if kind == "regenerate":
            if conversation is None:
                raise ApplicationError(_("There is nothing to regenerate yet."), code="empty")
            services.conversation_regenerate(conversation=conversation, **choices)
            conversation.refresh_from_db()
            return conversation, False
        if conversation is None:
            conversation, _prompt = services.conversation_start(
                org=self.org, user=self.user, content=content.get("content", ""), **choices
            )
            return conversation, True
        services.conversation_continue(conversation=conversation, content=content.get("content", ""), **choices)
        conversation.refresh_from_db()
        return conversation, False

    def _histories(self, conversation: Conversation) -> list[list[dict]]:
        messages = selectors.conversation_messages(conversation)
        return [selectors.lane_history(conversation, lane, messages) for lane in range(len(conversation.lane_models))]

    async def _run_turn(self, conversation: Conversation, histories: list[list[dict]]):
        try:
            lanes = [
                self._run_lane(conversation, LaneState(lane=lane, model_id=model_id), histories[lane])
                for lane, model_id in enumerate(conversation.lane_models)
            ]
            await asyncio.gather(*lanes)
        finally:
            self.streams.clear()
            await self._send({"type": "idle"})

    async def _run_lane(self, conversation: Conversation, state: LaneState, history: list[dict]):
        await self._send({"type": "start", "lane": state.lane, "model": state.model_id})
        body = {"model": state.model_id, "messages": history, **conversation.sampling, "stream": True}
        stream = asyncio.ensure_future(self._consume(state, body))
        self.streams[state.lane] = stream
        status, error_code, error_message = AnswerStatus.OK, "", ""
        try:
            await stream
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            status = AnswerStatus.STOPPED
        except Exception as exc:  # noqa: BLE001 — every failure becomes a message the user can read
            status = AnswerStatus.ERROR
            error_code, error_message = _describe_error(exc)
        finally:
            self.streams.pop(state.lane, None)
        if status == AnswerStatus.OK and (state.summary or {}).get("status") == "error":
            status = AnswerStatus.ERROR
            error_code = "upstream_incomplete"
            error_message = _("The model's answer broke off before it was complete; what arrived is kept above.")
        answer = await database_sync_to_async(self._record)(conversation, state, status, error_code, error_message)
        if status == AnswerStatus.ERROR:
            await self._error(error_message, code=error_code, lane=state.lane)
        await self._send(
            {
                "type": "done",
                "lane": state.lane,
                "status": status,
                "model": state.model_id,
                "html": render_markdown(answer.content),
                "stats": answer_stats(answer),
                "stats_html": answer_stats_html(answer),
                "message_id": answer.pk,
            }
        )

    async def _consume(self, state: LaneState, body: dict):
        from gateway.core import chat_stream

        async def waking():
            await self._send({"type": "waking", "lane": state.lane, "model": state.model_id})

        async for item in chat_stream(
            org=self.org, model_id=state.model_id, body=body, user=self.user, source="playground", on_waking=waking
        ):
            if item.get("type") == "summary":
                state.summary = item
                continue
            for choice in item.get("choices") or []:
                text = (choice.get("delta") or {}).get("content")
                if text:
                    if state.first_token_at is None:
                        state.first_token_at = time.monotonic()
                    state.parts.append(text)
                    state.chunks += 1
                    await self._send({"type": "delta", "lane": state.lane, "text": text})
                if choice.get("finish_reason"):
                    state.finish_reason = choice["finish_reason"]

    def _record(self, conversation, state: LaneState, status, error_code, error_message):
        summary = state.summary or {}
        # Without a summary (stopped, failed) only what this side saw is known: the tokens streamed so far.
        usage = summary.get("usage") or ({"completion_tokens": state.chunks} if state.chunks else {})
        elapsed_ms = int((time.monotonic() - state.started) * 1000)
        local_ttft = int((state.first_token_at - state.started) * 1000) if state.first_token_at else None
        return services.answer_record(
            conversation=conversation,
            lane=state.lane,
            model_id=state.model_id,
            content=state.text,
            status=status,
            finish_reason=state.finish_reason,
            error_code=error_code,
            error_message=error_message,
            prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens"),
            ttft_ms=summary.get("ttft_ms", local_ttft),
            latency_ms=summary.get("latency_ms", elapsed_ms),
            cost=_decimal_or_none(summary.get("cost")),
            currency=summary.get("currency") or "",
            request_id=summary.get("request_id") or "",
            replica=summary.get("replica") or "",
        )


def _describe_error(exc: Exception) -> tuple[str, str]:
    """(code, message) for the user: gateway errors as the platform words them, anything else generic."""
    from gateway.errors import GatewayError

    if isinstance(exc, GatewayError):
        code = getattr(exc, "code", None) or getattr(exc, "type", None) or "gateway_error"
        return str(code), _gateway_message(exc)
    logger.exception("playground answer failed", exc_info=exc)
    return "internal_error", _("The answer failed because of an internal error. Please try again.")


def _gateway_message(exc) -> str:
    code = getattr(exc, "code", "") or ""
    status = getattr(exc, "status", None)
    message = getattr(exc, "message", "") or str(exc)
    if code == "insufficient_quota":
        return _(
            "Your organization's balance is used up: top up in Billing to keep using paid models. (%(detail)s)"
        ) % {"detail": message}
    if status == 503:
        return _(
            "The model has no ready replica right now; try again in a moment or pick another model. (%(detail)s)"
        ) % {"detail": message}
    if status == 429:
        retry = getattr(exc, "retry_after", None)
        if retry:
            return _("Rate limit reached; retry in %(seconds)s s. (%(detail)s)") % {"seconds": retry, "detail": message}
        return _("Rate limit reached. (%(detail)s)") % {"detail": message}
    if status == 404:
        return _("The model is not available to this organization. (%(detail)s)") % {"detail": message}
    if status == 403:
        return _("Not allowed: %(detail)s") % {"detail": message}
    return message
