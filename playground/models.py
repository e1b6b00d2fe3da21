"""Playground conversations: per user and organization, with the answers' latency, tokens and cost."""

from __future__ import annotations

import uuid
from decimal import Decimal

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from core.querysets import OrgScopedQuerySet

# Sampling parameters the playground exposes: name -> (minimum, maximum, default, type).
PARAMETERS: dict[str, tuple[float, float, float | int, type]] = {
    "temperature": (0.0, 2.0, 0.7, float),
    "top_p": (0.0, 1.0, 1.0, float),
    "max_tokens": (1, 32768, 1024, int),
    "presence_penalty": (-2.0, 2.0, 0.0, float),
    "frequency_penalty": (-2.0, 2.0, 0.0, float),
}
DEFAULT_PARAMS = {name: spec[2] for name, spec in PARAMETERS.items()}
TITLE_MAX = 120
SYSTEM_PROMPT_MAX = 20_000
MESSAGE_MAX = 100_000


class ConversationQuerySet(OrgScopedQuerySet):
    def of_user(self, org, user):
        """A user's own conversations in one organization (colleagues do not see each other's)."""
        if user is None or not getattr(user, "is_authenticated", False):
            return self.none()
        return self.for_org(org).filter(user=user)


class Conversation(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    org = models.ForeignKey("maas.Organization", on_delete=models.CASCADE, related_name="conversations")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="conversations")
    title = models.CharField(_("title"), max_length=TITLE_MAX)
    model_id = models.CharField(_("model"), max_length=200)
    # Compare mode: the same prompts also go to this second model, answered side by side.
    compare_model_id = models.CharField(_("compare with"), max_length=200, blank=True)
    system_prompt = models.TextField(_("system prompt"), blank=True)
    params = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now, db_index=True)

    objects = ConversationQuerySet.as_manager()

    class Meta:
        verbose_name = _("conversation")
        verbose_name_plural = _("conversations")
        ordering = ["-updated_at"]
        indexes = [models.Index(fields=["org", "user", "-updated_at"])]

    def __str__(self) -> str:
        return self.title

    @property
    def compare(self) -> bool:
        return bool(self.compare_model_id)

    @property
    def lane_models(self) -> list[str]:
        return [self.model_id, self.compare_model_id] if self.compare_model_id else [self.model_id]

    @property
    def sampling(self) -> dict:
        return {**DEFAULT_PARAMS, **{k: v for k, v in (self.params or {}).items() if k in PARAMETERS}}


class Role(models.TextChoices):
    USER = "user", _("User")
    ASSISTANT = "assistant", _("Assistant")


class AnswerStatus(models.TextChoices):
    OK = "ok", _("Complete")
    STOPPED = "stopped", _("Stopped")
    ERROR = "error", _("Error")


class Message(models.Model):
    """A prompt or an answer. Answers belong to a lane (0, or 1 for the compare model) and carry their metrics."""

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="messages")
    role = models.CharField(max_length=16, choices=Role.choices)
    lane = models.PositiveSmallIntegerField(null=True, blank=True)  # None for prompts, shared by both lanes
    content = models.TextField(blank=True)
    model_id = models.CharField(max_length=200, blank=True)
    status = models.CharField(max_length=16, choices=AnswerStatus.choices, blank=True)
    finish_reason = models.CharField(max_length=32, blank=True)
    error_code = models.CharField(max_length=64, blank=True)
    error_message = models.TextField(blank=True)
    prompt_tokens = models.PositiveIntegerField(null=True, blank=True)
    completion_tokens = models.PositiveIntegerField(null=True, blank=True)
    ttft_ms = models.PositiveIntegerField(null=True, blank=True)
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    cost = models.DecimalField(max_digits=18, decimal_places=6, null=True, blank=True)
    currency = models.CharField(max_length=3, blank=True)
    request_id = models.CharField(max_length=64, blank=True)
    replica = models.CharField(max_length=253, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name = _("message")
        verbose_name_plural = _("messages")
        ordering = ["conversation", "id"]
        indexes = [models.Index(fields=["conversation", "id"])]

    def __str__(self) -> str:
        return f"{self.role}: {self.content[:40]}"

    @property
    def tokens_per_second(self) -> Decimal | None:
        """Decode speed: completion tokens over the time after the first token."""
        if not self.completion_tokens or self.latency_ms is None:
            return None
        decode_ms = self.latency_ms - (self.ttft_ms or 0)
        if decode_ms <= 0:
            return None
        return (Decimal(self.completion_tokens) * 1000 / Decimal(decode_ms)).quantize(Decimal("0.1"))
