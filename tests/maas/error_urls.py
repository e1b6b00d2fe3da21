"""The platform's URLs plus one view that fails, for the 500 page (``pytest.mark.urls``)."""

from django.http import HttpRequest, HttpResponse
from django.urls import path

from maas import urls


def fail(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("a bug")


urlpatterns = [path("fail/", fail), *urls.urlpatterns]
handler400 = urls.handler400
handler404 = urls.handler404
handler500 = urls.handler500
