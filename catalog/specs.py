"""Parsing and validation of ModelHub-format model specs (one YAML file per model).

Every problem is reported as ``<file>: <field>: <reason>``; a spec either parses completely or not at all.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TypeVar

import yaml

from catalog.models import SLUG_PATTERN, Runtime, Task
from catalog.semver import SemverError, parse_range

SLUG_RE = re.compile(rf"^{SLUG_PATTERN}\Z")
PARAMS_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*([BbMm])$")
HUBS = ("huggingface", "modelscope")
CURRENCIES = ("CNY", "USD", "EUR")

_T = TypeVar("_T")


class SpecError(ValueError):
    def __init__(self, errors: list[str]):
        super().__init__("\n".join(errors))
        self.errors = errors


@dataclass
class VariantSpec:
    runtime: str
    version_required: str
    gpu_type: str
    gpu_count: int
    per_gpu_memory_gb: int
    cpu: int
    memory_gb: int
    custom_runtime_args: list[str]


@dataclass
class ModelSpec:
    file: str
    slug: str
    name: str
    display_name: str
    publisher: str
    description_zh: str
    description_en: str
    tasks: list[str]
    parameters_b: Decimal
    active_parameters_b: Decimal | None
    context_length: int
    quantization: str
    license: str
    source_hub: str
    source_repo: str
    currency: str
    input_price_per_1k: Decimal
    output_price_per_1k: Decimal
    updated: dt.date
    spec_hash: str
    variants: list[VariantSpec] = field(default_factory=list)


class _Checker:
    def __init__(self, file: str):
        self.file = file
        self.errors: list[str] = []

    def error(self, path: str, reason: str) -> None:
        self.errors.append(f"{self.file}: {path}: {reason}")

    def string(
        self, data: dict, key: str, path: str | None = None, *, required: bool = True, max_len: int = 200
    ) -> str | None:
        path = path or key
        value = data.get(key)
        if value is None or value == "":
            if required:
                self.error(path, "is required")
            return None
        if not isinstance(value, str):
            self.error(path, f"must be a string, got {type(value).__name__}")
            return None
        if len(value) > max_len:
            self.error(path, f"must be at most {max_len} characters")
            return None
        return value.strip()

    def integer(self, data: dict, key: str, path: str, *, minimum: int = 0) -> int | None:
        value = data.get(key)
        if value is None:
            self.error(path, "is required")
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            self.error(path, f"must be an integer, got {value!r}")
            return None
        if value < minimum:
            self.error(path, f"must be >= {minimum}, got {value}")
            return None
        return value

    def price(self, data: dict, key: str, path: str) -> Decimal | None:
        value = data.get(key)
        if value is None:
            self.error(path, "is required")
            return None
        if isinstance(value, float):
            # YAML floats lose exactness; prices must be written as strings or integers.
            self.error(path, f"write prices as quoted decimals (e.g. '0.0006'), got float {value!r}")
            return None
        if isinstance(value, bool):
            self.error(path, f"must be a decimal, got {value!r}")
            return None
        try:
            amount = Decimal(str(value))
        except InvalidOperation:
            self.error(path, f"must be a decimal, got {value!r}")
            return None
        if not amount.is_finite():
            self.error(path, f"must be a finite decimal, got {value!r}")
            return None
        if amount < 0:
            self.error(path, f"must not be negative, got {value}")
            return None
        exponent = amount.as_tuple().exponent  # an int: the amount is finite
        if isinstance(exponent, int) and exponent < -6:
            self.error(path, "at most 6 decimal places")
            return None
        return amount


def _checked(value: _T | None) -> _T:
    """A field the checker accepted: it is None only after an error was recorded, and recorded errors raise first."""
    assert value is not None, "the spec checker let a missing field through"
    return value


def parse_spec_text(text: str, file: str) -> ModelSpec:
    c = _Checker(file)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "document"
        raise SpecError([f"{file}: {where}: invalid YAML ({getattr(exc, 'problem', exc)})"]) from None
    if not isinstance(data, dict):
        raise SpecError([f"{file}: document: must be a mapping of fields"])

    name = c.string(data, "name")
    raw_slug = data.get("slug") or name or ""
    slug = raw_slug.lower() if isinstance(raw_slug, str) else ""
    if name and slug and not SLUG_RE.match(slug):
        c.error("slug" if data.get("slug") else "name", f"cannot form a URL slug from {slug!r}")
    display_name = c.string(data, "displayName") or name
    publisher = c.string(data, "publisher", max_len=100)

    description = data.get("description")
    desc_zh = desc_en = None
    if not isinstance(description, dict):
        c.error("description", "must be a mapping with zh and en texts")
    else:
        desc_zh = c.string(description, "zh", "description.zh", max_len=5000)
        desc_en = c.string(description, "en", "description.en", max_len=5000)

    tasks = data.get("tags")
    if not isinstance(tasks, list) or not tasks:
        c.error("tags", "must be a non-empty list of tasks")
        tasks = []
    else:
        for i, task in enumerate(tasks):
            if task not in Task.values:
                c.error(f"tags[{i}]", f"unknown task {task!r} (known: {', '.join(Task.values)})")

    parameters_b = active_b = None
    for key in ("parameters", "activeParameters"):
        raw = data.get(key)
        if raw is None:
            if key == "parameters":
                c.error(key, "is required (e.g. 7.6B)")
            continue
        match = PARAMS_RE.match(str(raw).strip())
        if not match:
            c.error(key, f"must look like 7.6B or 560M, got {raw!r}")
            continue
        value = Decimal(match.group(1))
        value = value if match.group(2).upper() == "B" else value / 1000
        if key == "parameters":
            parameters_b = value
        else:
            active_b = value

    context_length = c.integer(data, "contextLength", "contextLength", minimum=1)
    quantization = c.string(data, "quantization", max_len=32)
    license_ = c.string(data, "license", max_len=100)

    source = data.get("source")
    hub = repo = None
    if not isinstance(source, dict) or len(source) != 1:
        c.error(
            "source", "must name exactly one of huggingface or modelscope, e.g. {huggingface: Qwen/Qwen2.5-7B-Instruct}"
        )
    else:
        hub, repo = next(iter(source.items()))
        if hub not in HUBS:
            c.error("source", f"unknown weight source {hub!r} (known: {', '.join(HUBS)})")
        if not isinstance(repo, str) or not re.match(r"^[\w.-]+/[\w.-]+$", repo or ""):
            c.error(f"source.{hub}", f"must be an <owner>/<repo> id, got {repo!r}")

    pricing = data.get("pricing")
    currency = in_price = out_price = None
    if not isinstance(pricing, dict):
        c.error("pricing", "must be a mapping with currency, inputPer1K and outputPer1K")
    else:
        currency = c.string(pricing, "currency", "pricing.currency", max_len=3)
        if currency and currency not in CURRENCIES:
            c.error("pricing.currency", f"unsupported currency {currency!r} (supported: {', '.join(CURRENCIES)})")
        in_price = c.price(pricing, "inputPer1K", "pricing.inputPer1K")
        out_price = c.price(pricing, "outputPer1K", "pricing.outputPer1K")

    updated = data.get("updated")
    if isinstance(updated, str):
        try:
            updated = dt.date.fromisoformat(updated)
        except ValueError:
            c.error("updated", f"must be a date YYYY-MM-DD, got {updated!r}")
            updated = None
    elif not isinstance(updated, dt.date):
        c.error("updated", "is required (YYYY-MM-DD)")
        updated = None

    variants: list[VariantSpec] = []
    deployments = data.get("deployments")
    if not isinstance(deployments, list) or not deployments:
        c.error("deployments", "must be a non-empty list of deployment variants")
    else:
        for i, item in enumerate(deployments):
            path = f"deployments[{i}]"
            if not isinstance(item, dict):
                c.error(path, "must be a mapping")
                continue
            runtime = item.get("runtime")
            if runtime not in Runtime.values:
                c.error(f"{path}.runtime", f"unknown runtime {runtime!r} (known: {', '.join(Runtime.values)})")
            version_required = item.get("versionRequired")
            if not isinstance(version_required, str):
                c.error(f"{path}.versionRequired", "is required, a semver range such as '>=0.7.1'")
            else:
                try:
                    parse_range(version_required)
                except SemverError as exc:
                    c.error(f"{path}.versionRequired", str(exc))
            res = item.get("resourceRequirements")
            if not isinstance(res, dict):
                c.error(f"{path}.resourceRequirements", "is required")
                continue
            rp = f"{path}.resourceRequirements"
            gpu_type = c.string(res, "gpuType", f"{rp}.gpuType", max_len=64)
            gpu_count = c.integer(res, "gpuCount", f"{rp}.gpuCount", minimum=1)
            per_gpu = c.integer(res, "perGPUMemoryGB", f"{rp}.perGPUMemoryGB", minimum=1)
            cpu = c.integer(res, "cpu", f"{rp}.cpu", minimum=1)
            memory = c.integer(res, "memory", f"{rp}.memory", minimum=1)
            args = item.get("customRuntimeArgs", [])
            if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
                c.error(f"{path}.customRuntimeArgs", "must be a list of strings")
                args = []
            variants.append(
                VariantSpec(
                    runtime=runtime or "",
                    version_required=version_required if isinstance(version_required, str) else "",
                    gpu_type=gpu_type or "",
                    gpu_count=gpu_count or 0,
                    per_gpu_memory_gb=per_gpu or 0,
                    cpu=cpu or 0,
                    memory_gb=memory or 0,
                    custom_runtime_args=list(args),
                )
            )

    if c.errors:
        raise SpecError(c.errors)
    return ModelSpec(
        file=file,
        slug=slug,
        name=_checked(name),
        display_name=_checked(display_name),
        publisher=_checked(publisher),
        description_zh=_checked(desc_zh),
        description_en=_checked(desc_en),
        tasks=list(tasks),
        parameters_b=_checked(parameters_b),
        active_parameters_b=active_b,
        context_length=_checked(context_length),
        quantization=_checked(quantization),
        license=_checked(license_),
        source_hub=_checked(hub),
        source_repo=_checked(repo),
        currency=_checked(currency),
        input_price_per_1k=_checked(in_price),
        output_price_per_1k=_checked(out_price),
        updated=_checked(updated),
        spec_hash=hashlib.sha256(text.encode()).hexdigest(),
        variants=variants,
    )


def load_spec_dir(directory: Path) -> list[ModelSpec]:
    """Parse every ``*.yaml`` under ``directory``; raise one SpecError listing every problem in every file."""
    directory = Path(directory)
    if not directory.is_dir():
        raise SpecError([f"{directory}: directory: does not exist"])
    specs: list[ModelSpec] = []
    errors: list[str] = []
    seen: dict[str, str] = {}
    for path in sorted(directory.glob("*.y*ml")):
        try:
            spec = parse_spec_text(path.read_text(encoding="utf-8"), path.name)
        except SpecError as exc:
            errors.extend(exc.errors)
            continue
        if spec.slug in seen:
            errors.append(f"{path.name}: name: duplicates {seen[spec.slug]} (both are {spec.slug!r})")
            continue
        seen[spec.slug] = path.name
        specs.append(spec)
    if errors:
        raise SpecError(errors)
    return specs
