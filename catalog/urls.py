from django.urls import path, register_converter

from catalog import views
from catalog.models import SLUG_PATTERN


class ModelSlugConverter:
    """Catalog slugs keep the model's own spelling, dots included (qwen2.5-7b-instruct)."""

    regex = SLUG_PATTERN

    def to_python(self, value):
        return value

    def to_url(self, value):
        return value


register_converter(ModelSlugConverter, "modelslug")

app_name = "catalog"
urlpatterns = [
    path("", views.marketplace, name="marketplace"),
    path("<modelslug:slug>/", views.model_detail, name="model-detail"),
]
