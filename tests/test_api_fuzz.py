"""Schemathesis over the whole OpenAPI document, against a real ``voluble run`` server, as each role.

The server runs what ``./scripts/up`` runs (SQLite and the embedded Redis). Its organization holds one
of each resource (contact, category, chain, webhook, message, blast, client, token), whose ids the
fuzzer uses for the path parameters, so bodies reach the handlers' rules and not only the 404 of an
unknown id (the cross-tenant 404s have their own tests). Checks: no 5xx, every status documented,
every body and content type as documented. The number of examples per operation is bounded so CI
stays within its time; raise ``VOLUBLE_FUZZ_EXAMPLES`` to fuzz longer locally.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar.testing import AsyncTestClient

from app.config import Settings
from app.tenants.models import Role
from tests.conftest import World, bearer
from tests.helpers import stop_process, wait_for, worker_env

EXAMPLES = int(os.environ.get("VOLUBLE_FUZZ_EXAMPLES", "5"))
CHECKS = "not_a_server_error,status_code_conformance,response_schema_conformance,content_type_conformance"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _seed(client: AsyncTestClient[Any], world: World, admin: dict[str, str]) -> dict[str, str]:
    """One resource of each kind in the organization; their ids by path parameter name."""

    async def created(path: str, body: dict[str, Any]) -> str:
        r = await client.post(path, json=body, headers=admin)
        assert r.status_code == 201, (path, r.text)
        return str(r.json()["id"])

    category = await created("/api/v1/categories", {"name": "Parents"})
    contact = await created(
        "/api/v1/contacts",
        {"first_name": "Ada", "surname": "Byron", "email": "ada@example.com", "category_ids": [category]},
    )
    chain = await created("/api/v1/servicechains", {"name": "log", "services": ["log"]})
    webhook = await created("/api/v1/webhooks", {"url": "http://127.0.0.1:9/hook"})
    message = await created("/api/v1/messages", {"contact_id": contact, "content": "Hi", "servicechain_id": chain})
    blast = await created(
        "/api/v1/blasts", {"name": "b", "content": "Hi", "servicechain_id": chain, "category_ids": [category]}
    )
    r = await client.post("/api/v1/clients", json={"name": "fuzzed", "scopes": ["contacts:read"]}, headers=admin)
    assert r.status_code == 201, r.text
    api_client = str(r.json()["id"])
    r = await client.post("/api/v1/tokens", json={"name": "fuzzed", "expires_in_days": 1}, headers=admin)
    assert r.status_code == 201, r.text
    token = str(r.json()["id"])
    return {
        "category_id": category,
        "contact_id": contact,
        "chain_id": chain,
        "webhook_id": webhook,
        "message_id": message,
        "blast_id": blast,
        "client_id": api_client,
        "token_id": token,
        "name": "log",
    }


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The suite's settings, with private webhook targets allowed (the seeded webhook points at 127.0.0.1)."""
    return dataclasses.replace(settings, security=dataclasses.replace(settings.security, allow_private_targets=True))


@pytest.mark.parametrize("db_backend", ["sqlite"], indirect=True)
async def test_schemathesis_finds_no_server_error_and_no_undocumented_answer(
    settings: Settings, client: AsyncTestClient[Any], world: World, tmp_path: Path
) -> None:
    org = await world.org()
    admin = await world.user(org, Role.ORG_ADMIN)
    tokens = {
        "org admin": await world.token(admin),
        "user": await world.token(await world.user(org, Role.USER)),
        "sysadmin": await world.token(await world.user(None, Role.SYSADMIN)),
    }
    ids = await _seed(client, world, bearer(tokens["org admin"]))
    ids["organization_id"] = str(org.id)
    ids["user_id"] = str(admin.id)
    config = tmp_path / "schemathesis.toml"
    config.write_text("[parameters]\n" + "".join(f'{name} = "{value}"\n' for name, value in ids.items()))

    port = _free_port()
    # an operator's budgets far above the fuzzer's pace: it explores the operations, not the 429 (tested apart)
    env = worker_env(settings, VOLUBLE_API_RATE_LIMIT="1000000", VOLUBLE_OAUTH_RATE_LIMIT_IP="1000000")
    log = (tmp_path / "server.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "app", "run", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:

        def up() -> bool:
            try:
                return httpx.get(f"{base}/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                return server.poll() is not None  # died: fail below with its log

        await wait_for(up, timeout=60)
        assert server.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
        failures = []
        for role, token in tokens.items():
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "schemathesis.cli",
                    "--config-file",
                    str(config),
                    "run",
                    f"{base}/schema/openapi.json",
                    "--header",
                    f"Authorization: Bearer {token}",
                    "--checks",
                    CHECKS,
                    "--max-examples",
                    str(EXAMPLES),
                    "--phases",
                    "examples,coverage,fuzzing",
                    "--workers",
                    "1",
                    "--seed",
                    "20261201",
                    "--generation-database",
                    "none",
                    "--no-color",
                ],
                capture_output=True,
                text=True,
                timeout=600,
                cwd=tmp_path,
            )
            summary = done.stdout[done.stdout.find("FAILURES") :] if "FAILURES" in done.stdout else done.stdout[-1500:]
            if done.returncode != 0:
                failures.append(f"--- as {role} (exit {done.returncode}):\n{summary[:6000]}\n{done.stderr[-1500:]}")
            else:
                assert " passed" in done.stdout, done.stdout[-1500:]
        assert not failures, "\n".join(failures)
    finally:
        stop_process(server)
        log.close()
