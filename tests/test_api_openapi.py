"""The OpenAPI document, the interactive docs, and the list envelope of every account list endpoint."""

from __future__ import annotations

import json
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from app.tenants.models import Role
from tests.conftest import World, bearer

ACCOUNT_PATHS = {
    "/api/v1/me": {"get"},
    "/api/v1/organizations": {"get", "post"},
    "/api/v1/organizations/{organization_id}": {"get", "patch", "delete"},
    "/api/v1/users": {"get", "post"},
    "/api/v1/users/{user_id}": {"get", "patch", "delete"},
    "/api/v1/clients": {"get", "post"},
    "/api/v1/clients/{client_id}": {"get", "delete"},
    "/api/v1/tokens": {"get", "post"},
    "/api/v1/tokens/{token_id}": {"get", "delete"},
    "/oauth/token": {"post"},
    "/health": {"get"},
    "/ready": {"get"},
}
HTTP_METHODS = {"get", "post", "put", "patch", "delete", "head", "options", "trace"}


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    return []


async def test_openapi_document_is_valid_json_listing_the_paths(client: AsyncTestClient[Any]) -> None:
    response = await client.get("/schema/openapi.json")
    assert response.status_code == 200, response.text[:500]
    assert response.headers["content-type"].startswith("application/")
    doc = json.loads(response.content)
    assert doc["openapi"].startswith("3.")
    assert doc["info"]["title"] and doc["info"]["version"]
    paths = doc["paths"]
    for path, methods in ACCOUNT_PATHS.items():
        assert path in paths, f"{path} missing from {sorted(paths)}"
        assert methods <= set(paths[path]), (path, set(paths[path]))
    for path, item in paths.items():
        for method, operation in item.items():
            if method in HTTP_METHODS:
                assert operation.get("responses"), f"{method} {path} documents no response"
    # the API operations declare the bearer scheme, and the scheme exists
    schemes = doc["components"]["securitySchemes"]
    assert schemes["BearerToken"]["type"] == "http" and schemes["BearerToken"]["scheme"] == "bearer"
    assert {"BearerToken": []} in paths["/api/v1/me"]["get"].get("security", doc.get("security", []))
    # every reference resolves
    for ref in _refs(doc):
        assert ref.startswith("#/"), ref
        node: Any = doc
        for part in ref[2:].split("/"):
            assert part in node, f"unresolved {ref}"
            node = node[part]
    # a password or its hash is never part of the user read schema
    schemas = doc["components"]["schemas"]
    user = next(
        v
        for k, v in schemas.items()
        if k.endswith("User") and "email" in v.get("properties", {}) and "id" in v.get("properties", {})
    )
    assert "password" not in user["properties"] and "password_hash" not in user["properties"]


async def test_interactive_docs_are_served(client: AsyncTestClient[Any]) -> None:
    for path in ("/schema", "/schema/swagger"):
        response = await client.get(path)
        assert response.status_code == 200, path
        assert response.headers["content-type"].startswith("text/html"), path
        assert "<html" in response.text.lower()
        assert "openapi.json" in response.text or "/schema" in response.text


@pytest.mark.parametrize("path", ["/organizations", "/users", "/clients", "/tokens"])
async def test_list_envelope_is_exact(client: AsyncTestClient[Any], world: World, path: str) -> None:
    org = await world.org()
    admin = await world.user(org, Role.ORG_ADMIN)
    sysadmin = await world.user(None, Role.SYSADMIN)
    await world.api_client(org, ["contacts:read"])
    token = await world.token(sysadmin if path == "/organizations" else admin)
    for params, limit, offset in (({}, 50, 0), ({"limit": 1}, 1, 0), ({"limit": 1, "offset": 1}, 1, 1)):
        response = await client.get(f"/api/v1{path}", params=params, headers=bearer(token))
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("application/json")
        body = response.json()
        assert set(body) == {"items", "total", "limit", "offset"}
        assert (body["limit"], body["offset"]) == (limit, offset)
        assert isinstance(body["items"], list) and isinstance(body["total"], int)
        assert body["total"] >= 1
        assert len(body["items"]) == max(0, min(limit, body["total"] - offset))
        for item in body["items"]:
            assert "id" in item and "created_at" in item and "updated_at" in item


async def test_every_api_operation_documents_its_errors_as_problem_details(client: AsyncTestClient[Any]) -> None:
    doc = json.loads((await client.get("/schema/openapi.json")).content)
    for path, item in doc["paths"].items():
        if not path.startswith("/api/"):
            continue
        for method, operation in item.items():
            if method not in HTTP_METHODS:
                continue
            documented = set(operation["responses"])
            expected = {"400", "401", "403", "404", "422", "429"} | (
                {"409", "413"} if method in {"post", "put", "patch", "delete"} else set()
            )
            assert expected <= documented, (method, path, sorted(expected - documented))
            problem = operation["responses"]["404"]["content"]["application/problem+json"]["schema"]
            assert problem == {"$ref": "#/components/schemas/Problem"}, (method, path, problem)
    assert {"type", "title", "status", "detail"} <= set(doc["components"]["schemas"]["Problem"]["required"])
    token = doc["paths"]["/oauth/token"]["post"]["responses"]
    assert {"400", "401"} <= set(token), sorted(token)
