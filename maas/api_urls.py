"""All management API routes under /api/ (each app registers its viewsets here)."""
from rest_framework.routers import SimpleRouter

from catalog.api import CatalogModelViewSet

router = SimpleRouter(trailing_slash="/?")
router.register("catalog/models", CatalogModelViewSet, basename="catalog-model")

urlpatterns = router.urls
