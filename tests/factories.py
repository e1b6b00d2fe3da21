"""factory_boy factories for the rows tests build: defaults are a small running vLLM service in a test region."""

import uuid
from datetime import date, timedelta
from decimal import Decimal

import factory
from django.contrib.auth import get_user_model
from django.utils import timezone

from catalog.models import CatalogModel
from deployments.models import Region, Replica, Service, ServiceStatus
from metering.models import UsageRecord
from tenancy.models import Membership, Organization, Role


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    email = factory.Sequence(lambda n: f"user{n}@example.com")
    username = factory.SelfAttribute("email")
    password = factory.django.Password("correct-horse-battery")


class OrganizationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Organization

    name = factory.Sequence(lambda n: f"Org {n}")
    namespace = factory.Sequence(lambda n: f"org-{n}")


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    org = factory.SubFactory(OrganizationFactory)
    user = factory.SubFactory(UserFactory)
    role = Role.MEMBER


class RegionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Region
        django_get_or_create = ("code",)

    code = "cn-test-1"
    name_zh = "测试一区"
    name_en = "Test 1"


class CatalogModelFactory(factory.django.DjangoModelFactory):
    """A small chat model priced per token; tests that need a shipped spec look it up after syncing the catalog."""

    class Meta:
        model = CatalogModel

    slug = factory.Sequence(lambda n: f"test-model-{n}")
    name = factory.SelfAttribute("slug")
    display_name = factory.SelfAttribute("slug")
    publisher = "test"
    description_zh = "测试"
    description_en = "test"
    tasks = factory.LazyFunction(lambda: ["chat"])
    parameters_b = Decimal("0.5")
    context_length = 8192
    quantization = "bf16"
    license = "apache-2.0"
    source_hub = "huggingface"
    source_repo = factory.LazyAttribute(lambda o: f"test/{o.slug}")
    currency = "CNY"
    input_price_per_1k = Decimal("0.002")
    output_price_per_1k = Decimal("0.006")
    spec_updated = date(2026, 11, 1)
    spec_file = factory.LazyAttribute(lambda o: f"{o.slug}.yaml")
    spec_hash = "0" * 64


class ServiceFactory(factory.django.DjangoModelFactory):
    """A running one-instance service on one H100; ``replica_urls`` adds a ready replica per engine base URL."""

    class Meta:
        model = Service
        skip_postgeneration_save = True  # the replicas point at the service; the service row itself is done

    org = factory.SubFactory(OrganizationFactory)
    name = factory.Sequence(lambda n: f"svc-{n}")
    catalog_model = factory.SubFactory(CatalogModelFactory)
    region = factory.SubFactory(RegionFactory)
    variant_position = 0
    runtime = "vllm"
    runtime_version = "0.10.2"
    image = factory.LazyAttribute(lambda o: f"vllm/vllm-openai:v{o.runtime_version}")
    gpu_product = "NVIDIA-H100"
    gpu_count = 1
    per_gpu_memory_gb = 80
    cpu = 8
    memory_gb = 64
    max_model_len = 8192
    instances = 1
    hourly_price = Decimal("12.50")
    currency = "CNY"
    status = ServiceStatus.RUNNING

    @factory.post_generation
    def replica_urls(self, create, urls, **kwargs):
        for i, base_url in enumerate(urls or ()):
            ReplicaFactory(service=self, name=f"{self.name}-{i}", base_url=base_url)


class ReplicaFactory(factory.django.DjangoModelFactory):
    """An engine replica that is serving (``ready``) at ``base_url``."""

    class Meta:
        model = Replica

    service = factory.SubFactory(ServiceFactory)
    name = factory.LazyAttributeSequence(lambda o, n: f"{o.service.name}-{n}")
    base_url = "http://127.0.0.1:9"
    ready = True


class UsageRecordFactory(factory.django.DjangoModelFactory):
    """One successful public chat request: 1000 prompt and 500 completion tokens, started now, taking a second."""

    class Meta:
        model = UsageRecord

    id = factory.LazyFunction(uuid.uuid4)
    org = factory.SubFactory(OrganizationFactory)
    endpoint = "chat.completions"
    catalog_model = factory.SubFactory(CatalogModelFactory)
    public = True
    model_id = factory.LazyAttribute(
        lambda o: f"public/{o.catalog_model.slug}" if o.public else f"{o.org.namespace}/svc"
    )
    prompt_tokens = 1000
    completion_tokens = 500
    cached_tokens = 0
    latency_ms = 800
    ttft_ms = 120
    status = "ok"
    http_status = factory.LazyAttribute(lambda o: 502 if o.status == "error" else 200)
    started_at = factory.LazyFunction(timezone.now)
    finished_at = factory.LazyAttribute(lambda o: o.started_at + timedelta(seconds=1))
