import json
from pathlib import Path

from fastapi.testclient import TestClient

COMMITTED = Path(__file__).resolve().parent.parent / "openapi" / "openapi.json"


def test_committed_openapi_matches_app(client: TestClient) -> None:
    served = client.get("/openapi.json").json()
    committed = json.loads(COMMITTED.read_text(encoding="utf-8"))
    assert committed == served, (
        "openapi/openapi.json is stale: run `mailprov openapi -o openapi/openapi.json`"
    )


def test_openapi_operations_documented(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    operation_ids = set()
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            assert operation.get("summary"), (method, path)
            assert operation.get("description"), (method, path)
            assert operation.get("tags"), (method, path)
            operation_ids.add(operation["operationId"])
            for status, response in operation["responses"].items():
                if status[0] in "45":
                    assert list(response["content"]) == ["application/problem+json"], (method, path)
    assert len(operation_ids) == sum(len(ops) for ops in document["paths"].values())


def _resolve(document: dict, schema: dict) -> dict:  # type: ignore[type-arg]
    while "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def test_openapi_every_body_and_answer_has_examples(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    missing = []
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            bodies = [("request", operation.get("requestBody", {}).get("content", {}))]
            bodies += [
                (status, r.get("content", {})) for status, r in operation["responses"].items()
            ]
            for where, content in bodies:
                for media in content.values():
                    schema = _resolve(document, media.get("schema", {}))
                    if not (
                        schema.get("examples") or media.get("examples") or media.get("example")
                    ):
                        missing.append(f"{method.upper()} {path} {where}")
    assert missing == []


def test_openapi_examples_are_valid_requests(client: TestClient) -> None:
    """Each request example parses as its model (schemathesis sends them too)."""
    from app.compose import SendRequest
    from app.keys import KeyCreate
    from app.models import (
        AliasCreate,
        AliasUpdate,
        DestinationAdd,
        DkimKeyCreate,
        DkimKeyUpdate,
        DomainCreate,
        MailboxCreate,
        MailboxUpdate,
    )

    for model in (AliasCreate, AliasUpdate, DestinationAdd, DkimKeyCreate, DkimKeyUpdate,
                  DomainCreate, MailboxCreate,
                  MailboxUpdate, KeyCreate, SendRequest):  # fmt: skip
        for example in model.model_json_schema()["examples"]:
            model.model_validate_json(json.dumps(example))
