"""The OpenAPI document: served at /openapi.json and committed as openapi/openapi.json
(``mailprov openapi -o openapi/openapi.json``); a test fails when the two differ."""

import json
from typing import Any

from fastapi import FastAPI

from app.errors import PROBLEM_MEDIA_TYPE


def install_openapi(app: FastAPI) -> None:
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            _problems_only_as_problem_json(generate())
        assert app.openapi_schema is not None
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _problems_only_as_problem_json(document: dict[str, Any]) -> None:
    """Error responses are served as application/problem+json, never application/json."""
    for path in document.get("paths", {}).values():
        for operation in path.values():
            for status, response in operation.get("responses", {}).items():
                content = response.get("content", {})
                if status.startswith(("4", "5")) and "application/json" in content:
                    content[PROBLEM_MEDIA_TYPE] = content.pop("application/json")


def openapi_json() -> str:
    from app.config import Settings
    from app.main import create_app

    # The document does not depend on settings; an in-memory URL opens no file.
    document = create_app(Settings(DATABASE_URL="sqlite://")).openapi()
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"
