"""Spec validation: every bad spec fails with `file: field: reason`, and a failed sync changes nothing."""

import shutil
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command

from catalog.models import CatalogModel
from catalog.specs import SpecError, load_spec_dir, parse_spec_text

GOOD = (Path(settings.CATALOG_SPECS_DIR) / "qwen2.5-7b-instruct.yaml").read_text()


def errors_for(text: str) -> list[str]:
    with pytest.raises(SpecError) as info:
        parse_spec_text(text, "bad.yaml")
    return info.value.errors


def test_shipped_specs_are_valid_and_cover_the_required_models():
    specs = {s.slug: s for s in load_spec_dir(settings.CATALOG_SPECS_DIR)}
    assert len(specs) >= 12
    for slug in [
        "deepseek-v3",
        "deepseek-r1",
        "qwen2.5-72b-instruct-awq",
        "qwen2.5-7b-instruct",
        "qwen2-0.5b-instruct",
        "glm-4-9b-chat",
        "llama-3.1-8b-instruct",
        "mistral-7b-instruct-v0.3",
        "bge-m3",
        "qwen3-8b",
    ]:
        assert slug in specs, slug
    assert any("embedding" in s.tasks for s in specs.values())
    assert any("vision" in s.tasks for s in specs.values())
    v3 = specs["deepseek-v3"].variants[0]
    assert (v3.gpu_count, v3.per_gpu_memory_gb) == (16, 80)


def test_good_spec_parses_exact_prices():
    spec = parse_spec_text(GOOD, "qwen.yaml")
    assert str(spec.input_price_per_1k) == "0.0005"
    assert spec.source_hub == "huggingface" and spec.source_repo == "Qwen/Qwen2.5-7B-Instruct"
    assert spec.variants[0].runtime == "vllm"


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda t: t.replace("publisher: Qwen\n", ""), "bad.yaml: publisher: is required"),
        (
            lambda t: t.replace("'>=0.6.6'", "'>=banana'"),
            "bad.yaml: deployments[0].versionRequired: invalid version range '>=banana'",
        ),
        (
            lambda t: t.replace("runtime: vllm", "runtime: tgi"),
            "bad.yaml: deployments[0].runtime: unknown runtime 'tgi'",
        ),
        (
            lambda t: t.replace("inputPer1K: '0.0005'", "inputPer1K: '-0.0005'"),
            "bad.yaml: pricing.inputPer1K: must not be negative",
        ),
        (
            lambda t: t.replace("inputPer1K: '0.0005'", "inputPer1K: 0.0005"),
            "bad.yaml: pricing.inputPer1K: write prices as quoted decimals",
        ),
        (
            lambda t: t.replace("gpuCount: 1,", "gpuCount: 0,", 1),
            "bad.yaml: deployments[0].resourceRequirements.gpuCount: must be >= 1",
        ),
        (
            lambda t: t.replace("contextLength: 32768", "contextLength: lots"),
            "bad.yaml: contextLength: must be an integer",
        ),
        (
            lambda t: t.replace("tags: [text-generation, chat]", "tags: [telepathy]"),
            "bad.yaml: tags[0]: unknown task 'telepathy'",
        ),
        (
            lambda t: t.replace("huggingface: Qwen/Qwen2.5-7B-Instruct", "civitai: x/y"),
            "bad.yaml: source: unknown weight source 'civitai'",
        ),
        (lambda t: t.replace("updated: 2024-09-19", "updated: yesterday"), "bad.yaml: updated: must be a date"),
        (lambda t: t + "  - oops\n", "bad.yaml: deployments[2]: must be a mapping"),
        (lambda t: "name: [unclosed\n", "bad.yaml: line"),
    ],
)
def test_bad_spec_reports_file_field_reason(mutate, expected):
    errors = errors_for(mutate(GOOD))
    assert any(e.startswith(expected) for e in errors), errors


@pytest.mark.django_db
def test_one_bad_file_fails_the_whole_sync_and_changes_nothing(tmp_path):
    for f in Path(settings.CATALOG_SPECS_DIR).glob("*.yaml"):
        shutil.copy(f, tmp_path / f.name)
    (tmp_path / "zz-broken.yaml").write_text(
        GOOD.replace("name: Qwen2.5-7B-Instruct", "name: Broken-Model").replace(
            "inputPer1K: '0.0005'", "inputPer1K: '-1'"
        )
    )
    with pytest.raises(CommandError) as info:
        call_command("sync_catalog", specs_dir=tmp_path)
    assert "zz-broken.yaml: pricing.inputPer1K: must not be negative" in str(info.value)
    assert CatalogModel.objects.count() == 0


@pytest.mark.django_db
def test_duplicate_names_are_refused(tmp_path):
    (tmp_path / "a.yaml").write_text(GOOD)
    (tmp_path / "b.yaml").write_text(GOOD)
    with pytest.raises(SpecError) as info:
        load_spec_dir(tmp_path)
    assert info.value.errors == ["b.yaml: name: duplicates a.yaml (both are 'qwen2.5-7b-instruct')"]
