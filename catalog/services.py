"""Writes for the catalog: syncing specs into the database."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from catalog.models import CatalogModel, DeploymentVariant
from catalog.specs import ModelSpec, load_spec_dir


@dataclass
class SyncResult:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    unlisted: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{len(self.created)} created, {len(self.updated)} updated, {len(self.unchanged)} unchanged, "
            f"{len(self.unlisted)} unlisted"
        )


def _model_fields(spec: ModelSpec) -> dict:
    return {
        "name": spec.name,
        "display_name": spec.display_name,
        "publisher": spec.publisher,
        "description_zh": spec.description_zh,
        "description_en": spec.description_en,
        "tasks": spec.tasks,
        "parameters_b": spec.parameters_b,
        "active_parameters_b": spec.active_parameters_b,
        "context_length": spec.context_length,
        "quantization": spec.quantization,
        "license": spec.license,
        "source_hub": spec.source_hub,
        "source_repo": spec.source_repo,
        "currency": spec.currency,
        "input_price_per_1k": spec.input_price_per_1k,
        "output_price_per_1k": spec.output_price_per_1k,
        "spec_updated": spec.updated,
        "spec_file": spec.file,
        "spec_hash": spec.spec_hash,
        "listed": True,
    }


def catalog_sync(*, specs_dir: Path | None = None) -> SyncResult:
    """Load every spec; all or nothing. Models whose spec disappeared are unlisted, never deleted."""
    specs = load_spec_dir(specs_dir or settings.CATALOG_SPECS_DIR)  # raises SpecError before any write
    result = SyncResult()
    with transaction.atomic():
        existing = {m.slug: m for m in CatalogModel.objects.select_for_update()}
        for spec in specs:
            model = existing.pop(spec.slug, None)
            if model is not None and model.spec_hash == spec.spec_hash and model.listed:
                result.unchanged.append(spec.slug)
                continue
            fields = _model_fields(spec)
            if model is None:
                model = CatalogModel.objects.create(slug=spec.slug, synced_at=timezone.now(), **fields)
                result.created.append(spec.slug)
            else:
                for name, value in fields.items():
                    setattr(model, name, value)
                model.synced_at = timezone.now()
                model.save()
                model.variants.all().delete()
                result.updated.append(spec.slug)
            DeploymentVariant.objects.bulk_create(
                [
                    DeploymentVariant(
                        model=model,
                        position=i,
                        runtime=v.runtime,
                        version_required=v.version_required,
                        gpu_type=v.gpu_type,
                        gpu_count=v.gpu_count,
                        per_gpu_memory_gb=v.per_gpu_memory_gb,
                        cpu=v.cpu,
                        memory_gb=v.memory_gb,
                        custom_runtime_args=v.custom_runtime_args,
                    )
                    for i, v in enumerate(spec.variants)
                ]
            )
        for slug, model in existing.items():
            if model.listed:
                model.listed = False
                model.save(update_fields=["listed"])
                result.unlisted.append(slug)
    return result
