"""Swagger UI and Redoc are served from drf-spectacular-sidecar's static files and load nothing from another
origin (README: the API docs work offline; issue 14)."""

from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("path", "bundle"),
    [
        ("/api/docs/", "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js"),
        ("/api/redoc/", "/static/drf_spectacular_sidecar/redoc/bundles/redoc.standalone.js"),
    ],
)
def test_docs_pages_reference_only_this_app(client, path, bundle):
    response = client.get(path)
    assert response.status_code == 200
    html = response.content.decode()
    references = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert bundle in references
    assert [r for r in references if not r.startswith("/")] == []
    assert "//" not in "".join(r[1:] for r in references)  # no protocol-relative URLs either
    assert "fonts.googleapis" not in html
