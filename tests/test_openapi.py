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
