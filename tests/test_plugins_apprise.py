"""The ``apprise`` plugin: Apprise's ``json://`` service delivers to a local receiver; the network guard
refuses private hosts named in an Apprise URL unless private targets are allowed."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from app.plugins.apprise_service import AppriseCredentials, ApprisePlugin, instantiate, target_hosts
from app.plugins.base import (
    ContactInfo,
    CredentialsError,
    OutgoingMessage,
    PluginContext,
    SendError,
    SignatureError,
    WebhookRequest,
)
from tests.helpers import free_port
from tests.providers.server import Receiver


def context(tmp_path: Path, *, allow_private: bool = True) -> PluginContext:
    return PluginContext(var_dir=tmp_path, allow_private_targets=allow_private, send_timeout=5.0)


def creds(url: str) -> AppriseCredentials:
    return msgspec.convert({"url": url}, AppriseCredentials)


def outgoing(content: str = "The build is green") -> OutgoingMessage:
    contact = ContactInfo(id=uuid.uuid4(), first_name="Steve")
    return OutgoingMessage(
        id=uuid.uuid4(), organization_id=uuid.uuid4(), content=content, contact=contact, subject="CI"
    )


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as server:
        yield server


async def test_json_url_delivers_to_a_local_receiver(tmp_path: Path, receiver: Receiver) -> None:
    plugin = ApprisePlugin(context(tmp_path))
    await plugin.self_test()
    url = f"json://127.0.0.1:{receiver.port}/notify"
    await plugin.validate_credentials(creds(url))

    provider_id = await plugin.send(outgoing("The build is green"), None, creds(url))

    assert uuid.UUID(provider_id)
    [request] = receiver.requests
    assert (request.method, request.path) == ("POST", "/notify")
    assert request.headers["content-type"].startswith("application/json")
    assert request.json["title"] == "CI" and request.json["message"] == "The build is green"
    assert request.json["type"] == "info" and request.json["version"] == "1.0"
    assert plugin.info.accepted_state == "MSG_SENT" and plugin.info.address_field is None


async def test_a_refusing_endpoint_is_a_send_error(tmp_path: Path) -> None:
    plugin = ApprisePlugin(context(tmp_path))
    with Receiver(status=500) as refusing:
        with pytest.raises(SendError, match="did not take the notification"):
            await plugin.send(outgoing(), None, creds(f"json://127.0.0.1:{refusing.port}/notify"))
        assert len(refusing.requests) >= 1
    with pytest.raises(SendError, match="did not take the notification"):
        await plugin.send(outgoing(), None, creds(f"json://127.0.0.1:{free_port()}/nobody"))


async def test_urls_apprise_does_not_understand_are_refused(tmp_path: Path) -> None:
    plugin = ApprisePlugin(context(tmp_path))
    for url, match in [
        ("bogus://whatever", "does not understand this bogus://"),
        ("not a url", "without spaces"),
        ("json://a b/c", "without spaces"),
    ]:
        with pytest.raises(CredentialsError, match=match):
            await plugin.validate_credentials(creds(url))
    with pytest.raises(SendError, match="does not understand"):
        await plugin.send(outgoing(), None, creds("bogus://whatever"))


@pytest.mark.parametrize(
    "url",
    [
        "json://127.0.0.1:{port}/notify",
        "jsons://localhost:{port}/notify",
        "json://[::1]:{port}/notify",
        "xml://10.0.0.8/notify",
        "ntfy://169.254.169.254/topic",
        "mailto://user:password@127.0.0.1:{port}?from=noreply@example.com",
        "mailto://user:password@example.com?smtp=127.0.0.1",
    ],
)
async def test_private_hosts_refused_unless_allowed(tmp_path: Path, receiver: Receiver, url: str) -> None:
    url = url.format(port=receiver.port)
    guarded = ApprisePlugin(context(tmp_path, allow_private=False))
    with pytest.raises(CredentialsError, match="private, loopback or link-local"):
        await guarded.validate_credentials(creds(url))
    with pytest.raises(SendError, match="private, loopback or link-local"):
        await guarded.send(outgoing(), None, creds(url))
    assert receiver.requests == []


def test_target_hosts_are_the_hosts_the_url_names() -> None:
    assert target_hosts(instantiate("json://example.com/x")) == [("example.com", 80)]
    assert target_hosts(instantiate("jsons://example.com:8443/x")) == [("example.com", 8443)]
    assert target_hosts(instantiate("json://[::1]:99/x")) == [("::1", 99)]
    assert target_hosts(instantiate("mailto://user:pw@example.org")) == [("example.org", 25)]
    assert target_hosts(instantiate("mailto://user:pw@example.org?smtp=smtp.example.net")) == [("smtp.example.net", 25)]
    # a service whose endpoint Apprise fixes: its URL's "host" is a token, not a host to connect to
    assert target_hosts(instantiate("tgram://123456789:" + "A" * 35 + "/12345")) == []


async def test_no_callbacks_and_the_url_is_not_shown(tmp_path: Path) -> None:
    plugin = ApprisePlugin(context(tmp_path))
    with pytest.raises(SignatureError):
        await plugin.parse_webhook(WebhookRequest("POST", "/", {}, {}, b"{}"), creds("json://example.com/x"))
    assert repr(creds("mailto://user:secret@example.com")) == "AppriseCredentials(url=mailto://***)"
