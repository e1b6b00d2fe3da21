from decimal import Decimal

import pytest
from django.conf import settings

from catalog.models import CatalogModel, DeploymentVariant
from catalog.services import catalog_sync

GOOD = (settings.CATALOG_SPECS_DIR / "qwen2.5-7b-instruct.yaml").read_text()


@pytest.mark.django_db
def test_sync_is_idempotent():
    first = catalog_sync()
    assert len(first.created) >= 12
    ids = dict(CatalogModel.objects.values_list("slug", "id"))
    variants = DeploymentVariant.objects.count()
    second = catalog_sync()
    assert second.created == [] and second.updated == [] and len(second.unchanged) == len(first.created)
    assert dict(CatalogModel.objects.values_list("slug", "id")) == ids
    assert DeploymentVariant.objects.count() == variants


@pytest.mark.django_db
def test_changed_spec_updates_in_place_and_removed_spec_is_unlisted(tmp_path):
    (tmp_path / "qwen.yaml").write_text(GOOD)
    (tmp_path / "other.yaml").write_text(GOOD.replace("name: Qwen2.5-7B-Instruct", "name: Other-Model"))
    catalog_sync(specs_dir=tmp_path)
    model = CatalogModel.objects.get(slug="qwen2.5-7b-instruct")

    (tmp_path / "qwen.yaml").write_text(GOOD.replace("outputPer1K: '0.001'", "outputPer1K: '0.0015'"))
    (tmp_path / "other.yaml").unlink()
    result = catalog_sync(specs_dir=tmp_path)

    assert result.updated == ["qwen2.5-7b-instruct"] and result.unlisted == ["other-model"]
    model.refresh_from_db()
    assert model.output_price_per_1k == Decimal("0.0015")
    assert model.variants.count() == 2
    assert CatalogModel.objects.get(slug="other-model").listed is False

    (tmp_path / "other.yaml").write_text(GOOD.replace("name: Qwen2.5-7B-Instruct", "name: Other-Model"))
    assert catalog_sync(specs_dir=tmp_path).updated == ["other-model"]
    assert CatalogModel.objects.get(slug="other-model").listed is True
