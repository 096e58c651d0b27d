"""/docs and /redoc load everything from this service: no CDN, no fonts, no validator."""

import re

import pytest
from fastapi.testclient import TestClient

# Anything that names a host: scheme-relative or absolute URLs.
EXTERNAL = re.compile(r"""(?:https?:)?//[A-Za-z0-9.-]+""")
REFERENCES = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']|url:\s*["']([^"']+)["']""")


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_page_references_no_external_host(anonymous: TestClient, page: str) -> None:
    answer = anonymous.get(page)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/html")
    html = answer.text
    assert EXTERNAL.findall(html) == []
    references = [a or b for a, b in REFERENCES.findall(html)]
    assert references, "the page loads nothing?"
    for reference in references:
        assert reference.startswith("/"), reference
        asset = anonymous.get(reference)
        assert asset.status_code == 200, reference
        assert len(asset.content) > 0


def test_swagger_ui_does_not_ask_the_public_validator(anonymous: TestClient) -> None:
    html = anonymous.get("/docs").text
    assert '"validatorUrl": null' in html


def test_docs_pages_are_not_in_the_openapi_document(anonymous: TestClient) -> None:
    paths = anonymous.get("/openapi.json").json()["paths"]
    assert not {"/docs", "/redoc", "/docs/oauth2-redirect"} & set(paths)


def test_docs_assets_are_served_with_their_types(anonymous: TestClient) -> None:
    js = anonymous.get("/docs-assets/swagger-ui-bundle.js")
    css = anonymous.get("/docs-assets/swagger-ui.css")
    assert "javascript" in js.headers["content-type"]
    assert css.headers["content-type"].startswith("text/css")
