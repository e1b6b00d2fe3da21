"""Usage records: one row per /v1 (or playground) request, written by the gateway, consumed by billing."""

from __future__ import annotations

import uuid

from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from core.querysets import OrgScopedQuerySet


class UsageSource(models.TextChoices):
    API = "api", "API"
    PLAYGROUND = "playground", "Playground"


class UsageStatus(models.TextChoices):
    OK = "ok", "OK"
    ERROR = "error", "Error"
    ABORTED = "aborted", "Aborted"  # the client went away mid-stream; tokens already streamed still count


class UsageRecord(models.Model):
    # The request id (also returned to the client as x-request-id): the natural key that makes ingestion idempotent.
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    org = models.ForeignKey("maas.Organization", on_delete=models.PROTECT, related_name="usage_records")
    api_key = models.ForeignKey("maas.ApiKey", on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    user = models.ForeignKey("auth.User", on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    source = models.CharField(max_length=16, choices=UsageSource.choices, default=UsageSource.API)
    endpoint = models.CharField(max_length=32)  # chat.completions | completions | embeddings
    model_id = models.CharField(max_length=200)  # as the client named it: public/<slug> or <namespace>/<service>
    catalog_model = models.ForeignKey(
        "catalog.CatalogModel", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    service = models.ForeignKey(
        "deployments.Service", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    public = models.BooleanField(default=False)  # billed per token when True
    replica = models.CharField(max_length=253, blank=True)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    cached_tokens = models.PositiveIntegerField(default=0)
    latency_ms = models.PositiveIntegerField(default=0)
    ttft_ms = models.PositiveIntegerField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=UsageStatus.choices)
    http_status = models.PositiveSmallIntegerField(default=200)
    error_code = models.CharField(max_length=64, blank=True)
    stream = models.BooleanField(default=False)
    prompt_hash = models.CharField(max_length=64, blank=True)
    params = models.JSONField(default=dict, blank=True)  # sampling parameters as sent upstream
    served_model_version = models.CharField(max_length=200, blank=True)  # upstream system_fingerprint / model
    # Per-token cost of public models at the price in force when served, by billing's rule; billing's charge is equal
    # (it corrects a record served with a superseded price). None: dedicated, billed per instance-hour.
    cost = models.DecimalField(max_digits=18, decimal_places=6, null=True, blank=True)
    currency = models.CharField(max_length=3, blank=True)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField()
    created_at = models.DateTimeField(default=timezone.now)

    objects = OrgScopedQuerySet.as_manager()

    class Meta:
        verbose_name = _("usage record")
        verbose_name_plural = _("usage records")
        ordering = ["-started_at"]
        indexes = [
            models.Index(fields=["org", "-started_at"]),
            models.Index(fields=["org", "model_id", "-started_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.id} {self.model_id} {self.prompt_tokens}+{self.completion_tokens}"

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens
