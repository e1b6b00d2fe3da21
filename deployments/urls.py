"""Console URLs of the deployments app, mounted at the site root (services/… and clusters/…)."""

from django.urls import path

from catalog.urls import ModelSlugConverter  # noqa: F401 - registers the "modelslug" converter
from deployments import views

app_name = "deployments"
urlpatterns = [
    path("services/", views.service_list, name="services"),
    path("services/new/<modelslug:slug>/", views.service_new, name="service-new"),
    path("services/new/<modelslug:slug>/price/", views.service_price, name="service-price"),
    path("services/<uuid:pk>/", views.service_detail, name="service-detail"),
    path("services/<uuid:pk>/scale/", views.service_scale, name="service-scale"),
    path("services/<uuid:pk>/scaling/", views.service_scaling, name="service-scaling"),
    path("services/<uuid:pk>/stop/", views.service_stop, name="service-stop"),
    path("services/<uuid:pk>/start/", views.service_start, name="service-start"),
    path("services/<uuid:pk>/delete/", views.service_delete, name="service-delete"),
    path("platform-services/", views.platform_services, name="platform-services"),
    path("platform-services/<uuid:pk>/", views.platform_service, name="platform-service"),
    path("quotas/", views.gpu_quotas, name="gpu-quotas"),
    path("quotas/<uuid:org_id>/<slug:region_code>/", views.gpu_quota, name="gpu-quota"),
    path("clusters/", views.cluster_list, name="clusters"),
    path("clusters/new/", views.cluster_new, name="cluster-new"),
    path("clusters/<uuid:pk>/", views.cluster_detail, name="cluster-detail"),
    path("clusters/<uuid:pk>/priority/", views.cluster_priority, name="cluster-priority"),
    path("clusters/<uuid:pk>/namespaces/", views.cluster_namespace, name="cluster-namespace"),
    path("clusters/<uuid:pk>/<str:action>/", views.cluster_action, name="cluster-action"),
]
