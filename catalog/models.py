"""The model marketplace: models loaded from ModelHub-format YAML specs, with their deployment variants."""

from __future__ import annotations

from decimal import Decimal

from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.indexes import GinIndex
from django.core.validators import RegexValidator
from django.db import models
from django.utils import timezone
from django.utils.translation import get_language
from django.utils.translation import gettext_lazy as _

# A model's slug keeps the model's own spelling, dots included (qwen2.5-7b-instruct). The spec parser, this field's
# validator, the console's URL converter and the API's lookup (and so its OpenAPI schema) all use this one pattern.
SLUG_PATTERN = r"[a-z0-9][a-z0-9._-]{0,98}[a-z0-9]"
validate_model_slug = RegexValidator(
    rf"^{SLUG_PATTERN}\Z",
    _(
        "Lowercase letters, digits, dots, hyphens and underscores; start and end with a letter or digit; "
        "2–100 characters."
    ),
)


class Task(models.TextChoices):
    TEXT_GENERATION = "text-generation", _("Text generation")
    CHAT = "chat", _("Chat")
    REASONING = "reasoning", _("Reasoning")
    CODE = "code", _("Code")
    EMBEDDING = "embedding", _("Embedding")
    VISION = "vision", _("Vision")
    RERANK = "rerank", _("Rerank")


class ModelKind(models.TextChoices):
    """What a model answers: chat (and text) completions, or embeddings; the gateway refuses the other endpoints."""

    CHAT = "chat", _("Chat")
    EMBEDDING = "embedding", _("Embedding")


class PublicApi(models.TextChoices):
    """Whether a model's ``public/<slug>`` API can be called now (the deployments app answers, see catalog.signals)."""

    AVAILABLE = "available", _("Public API available")
    STARTING = "starting", _("Public API starting")
    IDLE = "idle", _("Public API wakes on first request")
    NOT_OFFERED = "not-offered", _("No public API")


class Runtime(models.TextChoices):
    VLLM = "vllm", "vLLM"
    SGLANG = "sglang", "SGLang"


class CatalogModel(models.Model):
    slug = models.CharField(max_length=100, unique=True, validators=[validate_model_slug])
    name = models.CharField(max_length=200)
    display_name = models.CharField(max_length=200, verbose_name=_("display name"))
    publisher = models.CharField(max_length=100, db_index=True, verbose_name=_("publisher"))
    description_zh = models.TextField()
    description_en = models.TextField()
    tasks = ArrayField(models.CharField(max_length=32), default=list)
    parameters_b = models.DecimalField(_("parameters (billions)"), max_digits=8, decimal_places=2)
    active_parameters_b = models.DecimalField(max_digits=8, decimal_places=2, null=True, blank=True)
    context_length = models.PositiveIntegerField(verbose_name=_("context length"))
    quantization = models.CharField(max_length=32)
    license = models.CharField(max_length=100)
    source_hub = models.CharField(max_length=20)  # huggingface | modelscope
    source_repo = models.CharField(max_length=200)
    currency = models.CharField(max_length=3, verbose_name=_("currency"))
    input_price_per_1k = models.DecimalField(
        max_digits=14, decimal_places=6, verbose_name=_("input price per 1K tokens")
    )
    output_price_per_1k = models.DecimalField(
        max_digits=14, decimal_places=6, verbose_name=_("output price per 1K tokens")
    )
    spec_updated = models.DateField(_("updated"))
    spec_file = models.CharField(max_length=200)
    spec_hash = models.CharField(max_length=64)
    listed = models.BooleanField(default=True, help_text=_("Shown in the marketplace."), verbose_name=_("listed"))
    synced_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name = _("catalog model")
        verbose_name_plural = _("catalog models")
        ordering = ["-spec_updated", "slug"]
        indexes = [GinIndex(fields=["tasks"], name="catalog_model_tasks_gin")]

    def __str__(self) -> str:
        return self.display_name

    @property
    def public_model_id(self) -> str:
        return f"public/{self.slug}"

    @property
    def kind(self) -> ModelKind:
        return ModelKind.EMBEDDING if Task.EMBEDDING in self.tasks else ModelKind.CHAT

    @property
    def description(self) -> str:
        return self.description_zh if (get_language() or "").startswith("zh") else self.description_en

    @property
    def task_labels(self) -> list[str]:
        """The model's tasks in the reader's language (a task this version does not know, as its code)."""
        return [str(Task(t).label) if t in Task.values else t for t in self.tasks]

    @property
    def source(self) -> str:
        return f"{self.source_hub}: {self.source_repo}"

    @property
    def size_label(self) -> str:
        value = self.parameters_b.normalize()
        return f"{value:f}B"

    @property
    def max_gpus(self) -> int:
        return max((v.gpu_count for v in self.variants.all()), default=0)


class DeploymentVariant(models.Model):
    """One way to run a model: runtime, version range and the GPUs it needs per instance."""

    model = models.ForeignKey(CatalogModel, on_delete=models.CASCADE, related_name="variants")
    position = models.PositiveSmallIntegerField()
    runtime = models.CharField(max_length=16, choices=Runtime.choices)
    version_required = models.CharField(max_length=64)
    gpu_type = models.CharField(max_length=64)
    gpu_count = models.PositiveSmallIntegerField()
    per_gpu_memory_gb = models.PositiveSmallIntegerField()
    cpu = models.PositiveSmallIntegerField()
    memory_gb = models.PositiveIntegerField()
    custom_runtime_args = models.JSONField(default=list, blank=True)

    class Meta:
        verbose_name = _("deployment variant")
        verbose_name_plural = _("deployment variants")
        ordering = ["model", "position"]
        constraints = [models.UniqueConstraint(fields=["model", "position"], name="variant_unique_position")]

    def __str__(self) -> str:
        return f"{self.model.slug} #{self.position}: {self.runtime} {self.gpu_count}×{self.per_gpu_memory_gb}GB"

    @property
    def total_gpu_memory_gb(self) -> int:
        return self.gpu_count * self.per_gpu_memory_gb

    @property
    def resources_label(self) -> str:
        return f"{self.gpu_count}× {self.per_gpu_memory_gb} GB GPU · {self.cpu} vCPU · {self.memory_gb} GiB"


ZERO = Decimal("0")
