"""URLconf of `config.settings.bench`: the shipped routes plus the two limits of `bench/limits.py`."""

from django.urls import path

from bench.limits import BareCreateView, bare_json
from config.urls import urlpatterns as shipped

urlpatterns = [
    path("bench/bare-json", bare_json, name="bench-bare-json"),
    path("api/v1/bench/bare-create", BareCreateView.as_view(), name="bench-bare-create"),
    *shipped,
]
