"""The OpenAPI document: served at /openapi.json and committed as openapi/openapi.json
(``mailprov openapi -o openapi/openapi.json``, app/cli.py); a test fails when the two
differ."""

from typing import Any

from fastapi import FastAPI

from app.errors import PROBLEM_MEDIA_TYPE


def install_openapi(app: FastAPI) -> None:
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = generate()
            _problems_only_as_problem_json(document)
            _links(document)
        assert app.openapi_schema is not None
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


# What a created resource leads to: (operationId, path parameter, field of the answer).
LINKS: dict[str, list[tuple[str, str, str]]] = {
    "create_domain": [("read_domain", "name", "name"), ("delete_domain", "name", "name")],
    "create_mailbox": [
        ("read_mailbox", "address", "address"),
        ("update_mailbox", "address", "address"),
        ("delete_mailbox", "address", "address"),
    ],
    "create_alias": [
        ("read_alias", "source", "source"),
        ("replace_alias_destinations", "source", "source"),
        ("add_alias_destination", "source", "source"),
        ("delete_alias", "source", "source"),
    ],
    "create_key": [("read_key", "key_id", "id"), ("revoke_key", "key_id", "id")],
}


def _links(document: dict[str, Any]) -> None:
    """OpenAPI links from each create to what can be done with its result: the
    generated client's readers, and schemathesis's stateful phase, follow them."""
    for path in document.get("paths", {}).values():
        for operation in path.values():
            targets = LINKS.get(operation.get("operationId", ""))
            created = operation.get("responses", {}).get("201")
            if targets and created is not None:
                created["links"] = {
                    "".join(part.title() for part in target.split("_")): {
                        "operationId": target,
                        "parameters": {parameter: f"$response.body#/{field}"},
                    }
                    for target, parameter, field in targets
                }


def _problems_only_as_problem_json(document: dict[str, Any]) -> None:
    """Error responses are served as application/problem+json, never application/json."""
    for path in document.get("paths", {}).values():
        for operation in path.values():
            for status, response in operation.get("responses", {}).items():
                content = response.get("content", {})
                if status.startswith(("4", "5")) and "application/json" in content:
                    content[PROBLEM_MEDIA_TYPE] = content.pop("application/json")
