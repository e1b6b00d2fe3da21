"""All management API routes under /api/ (each app registers its viewsets here)."""

from rest_framework.routers import SimpleRouter

from billing.api import LedgerEntryViewSet, TopUpViewSet
from catalog.api import CatalogModelViewSet
from deployments.api import ServiceViewSet

router = SimpleRouter()
# Both /api/services and /api/services/ answer (API clients differ); SimpleRouter only takes True/False here.
router.trailing_slash = "/?"
router.register("catalog/models", CatalogModelViewSet, basename="catalog-model")
router.register("services", ServiceViewSet, basename="service")
router.register("billing/ledger", LedgerEntryViewSet, basename="billing-ledger")
router.register("billing/topups", TopUpViewSet, basename="billing-topup")

urlpatterns = router.urls
