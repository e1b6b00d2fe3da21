"""Reads for the playground: a user's conversations, their messages, the models they may pick."""

from __future__ import annotations

from catalog.models import ModelKind
from deployments.selectors import callable_models
from playground.models import Conversation, Message, Role

CONVERSATION_LIST_LIMIT = 100


def user_conversations(*, org, user, limit: int = CONVERSATION_LIST_LIMIT):
    return Conversation.objects.of_user(org, user).only("id", "title", "model_id", "compare_model_id", "updated_at")[
        :limit
    ]


def get_user_conversation(*, org, user, pk) -> Conversation | None:
    """The user's own conversation in this org, or None (someone else's or a malformed id is simply not found)."""
    from django.core.exceptions import ValidationError

    try:
        return Conversation.objects.of_user(org, user).filter(pk=pk).first()
    except (ValueError, ValidationError):
        return None


def conversation_messages(conversation: Conversation) -> list[Message]:
    return list(conversation.messages.order_by("id"))


def lane_history(conversation: Conversation, lane: int, messages: list[Message] | None = None) -> list[dict]:
    """The OpenAI ``messages`` one lane's model sees: system prompt, every prompt and that lane's answers."""
    messages = conversation_messages(conversation) if messages is None else messages
    history = [{"role": "system", "content": conversation.system_prompt}] if conversation.system_prompt else []
    for message in messages:
        if message.role == Role.USER:
            history.append({"role": "user", "content": message.content})
        elif message.lane == lane and message.content:
            history.append({"role": "assistant", "content": message.content})
    return history


def pickable_models(org) -> list[dict]:
    """Chat models the org can call now: public ones first, then its own running services (the playground chats, so
    an embedding model is never offered, let alone picked by default)."""
    models = [m for m in callable_models(org) if m["kind"] == ModelKind.CHAT]
    return sorted(models, key=lambda m: (not m["public"], m["id"]))


def is_embedding_model(org, model_id: str) -> bool:
    """Whether the org could call ``model_id`` now, but on /v1/embeddings (so not in the playground)."""
    return any(m["id"] == model_id and m["kind"] == ModelKind.EMBEDDING for m in callable_models(org))


def turns(messages: list[Message], lanes: int) -> list[dict]:
    """Messages grouped for display: each prompt with its answers per lane (``None`` where a lane has none)."""
    result: list[dict] = []
    for message in messages:
        if message.role == Role.USER:
            result.append({"prompt": message, "answers": [None] * lanes})
        elif result and message.lane is not None and message.lane < lanes:
            result[-1]["answers"][message.lane] = message
    return result
