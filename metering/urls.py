from django.urls import path, re_path

from metering import views

app_name = "metering"

urlpatterns = [
    path("", views.usage, name="usage"),
    path("csv/", views.usage_csv, name="usage-csv"),
    path("ingestion/", views.ingestion_status, name="ingestion"),
    re_path(r"^ingestion/dead/(?P<letter_id>\d+-\d+)/retry/$", views.dead_letter_retry, name="dead-letter-retry"),
]
