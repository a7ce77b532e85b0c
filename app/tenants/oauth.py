"""OAuth 2 token endpoint (RFC 6749 §4.4 client_credentials) on authlib.

authlib's server is synchronous and framework-agnostic. The adapter below loads the client row
asynchronously before handing the request to authlib, and persists the issued token afterwards, so
authlib does all protocol work (client authentication by HTTP Basic or form, grant and scope checks,
RFC 6749 error responses) without touching the database itself.
"""

from __future__ import annotations

import base64
import binascii
from collections import defaultdict
from typing import Any
from urllib.parse import unquote

from authlib.oauth2.rfc6749 import AuthorizationServer, ClientMixin, OAuth2Payload, OAuth2Request
from authlib.oauth2.rfc6749.errors import InsecureTransportError, InvalidRequestError, InvalidScopeError
from authlib.oauth2.rfc6749.grants import ClientCredentialsGrant
from authlib.oauth2.rfc6749.util import scope_to_list
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit.services import Actor, anonymous, record
from app.tenants.models import ApiClient, Organization
from app.tenants.principal import ALL_SCOPES
from app.tenants.security import new_secret, secret_matches
from app.tenants.services import TokenService


class OAuthClient(ClientMixin):
    """authlib's view of an :class:`ApiClient` row."""

    def __init__(self, row: ApiClient) -> None:
        self.row = row

    def get_client_id(self) -> str:
        return self.row.client_id

    def get_default_redirect_uri(self) -> str | None:
        return None

    def get_allowed_scope(self, scope: str | None) -> str:
        allowed = set(self.row.scopes)
        if not scope:
            return " ".join(sorted(allowed))
        return " ".join(s for s in scope_to_list(scope) if s in allowed)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return False

    def check_client_secret(self, client_secret: str) -> bool:
        return secret_matches(client_secret, self.row.secret_hash)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return endpoint == "token" and method in {"client_secret_basic", "client_secret_post"}

    def check_response_type(self, response_type: str) -> bool:
        return False

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "client_credentials"


class _FormPayload(OAuth2Payload):
    def __init__(self, form: dict[str, list[str]]) -> None:
        self._datalist = defaultdict(list, form)

    @property
    def data(self) -> dict[str, str]:
        return {k: v[0] for k, v in self._datalist.items() if v}

    @property
    def datalist(self) -> defaultdict[str, list[str]]:
        return self._datalist


class _Headers(dict[str, str]):
    """HTTP headers, looked up case-insensitively (authlib asks for ``Authorization``)."""

    def __init__(self, headers: dict[str, str]) -> None:
        super().__init__({k.lower(): v for k, v in headers.items()})

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and super().__contains__(key.lower())

    def get(self, key: str, default: Any = None) -> Any:
        return super().get(key.lower(), default)


class _Request(OAuth2Request):
    def __init__(self, uri: str, headers: dict[str, str], form: dict[str, list[str]]) -> None:
        super().__init__("POST", uri, headers=_Headers(headers))
        self.payload = _FormPayload(form)
        self._form = {k: v[0] for k, v in form.items() if v}

    @property
    def args(self) -> dict[str, str]:
        return {}

    @property
    def form(self) -> dict[str, str]:
        return self._form


class _ClientCredentialsGrant(ClientCredentialsGrant):
    # authlib's default is HTTP Basic alone; RFC 6749 §2.3.1 also allows the credentials in the form.
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]

    def validate_requested_scope(self) -> None:
        super().validate_requested_scope()
        scope = self.request.payload.scope
        if scope and not self.request.client.get_allowed_scope(scope):
            raise InvalidScopeError(description="The client holds none of the requested scopes.")


class TokenServer(AuthorizationServer):
    """One instance per request: it carries the preloaded client and collects the issued token."""

    def __init__(self, client: ApiClient | None, expires_in: int) -> None:
        super().__init__(scopes_supported=list(ALL_SCOPES))
        self._client = client
        self.expires_in = expires_in
        self.issued: dict[str, Any] | None = None
        self.register_grant(_ClientCredentialsGrant)
        self.register_token_generator("default", self._generate)

    def _generate(self, *, client: OAuthClient, scope: str | None, **_: Any) -> dict[str, Any]:
        granted = client.get_allowed_scope(scope)
        return {
            "access_token": new_secret("vol_at"),
            "token_type": "Bearer",
            "expires_in": self.expires_in,
            "scope": granted,
        }

    def query_client(self, client_id: str) -> OAuthClient | None:
        if self._client is None or self._client.client_id != client_id or self._client.revoked_at is not None:
            return None
        return OAuthClient(self._client)

    def save_token(self, token: dict[str, Any], request: OAuth2Request) -> None:
        self.issued = token

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        return None

    def create_oauth2_request(self, request: _Request) -> OAuth2Request:
        return request

    def handle_response(self, status: int, body: Any, headers: Any) -> tuple[int, Any, dict[str, str]]:
        return status, body, dict(headers)


def client_id_of(headers: dict[str, str], form: dict[str, list[str]]) -> str | None:
    """The client_id the request claims, from HTTP Basic or the form, without checking the secret."""
    auth = headers.get("authorization", "")
    if auth.lower().startswith("basic "):
        try:
            decoded = base64.b64decode(auth[6:].strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        return unquote(decoded.partition(":")[0]) or None
    values = form.get("client_id") or []
    return values[0] if values else None


async def issue_token(
    session: AsyncSession, uri: str, headers: dict[str, str], form: dict[str, list[str]], expires_in: int
) -> tuple[int, Any, dict[str, str]]:
    """Run the token endpoint; returns (status, body, headers) to send."""
    claimed = client_id_of(headers, form)
    row: ApiClient | None = None
    if claimed:
        row = await session.scalar(select(ApiClient).where(ApiClient.client_id == claimed))
    if row is not None:
        org = await session.get(Organization, row.organization_id)
        if org is None or org.suspended:
            row = None
    server = TokenServer(row, expires_in)
    repeated = sorted(k for k, v in form.items() if len(v) > 1)
    if repeated:  # RFC 6749 §3.2: parameters MUST NOT be included more than once
        return server.handle_response(*InvalidRequestError(f"Repeated parameter: {', '.join(repeated)}.")())
    if not (form.get("grant_type") or [""])[0]:
        return server.handle_response(*InvalidRequestError("Missing 'grant_type' parameter.")())
    try:
        request = _Request(uri, headers, form)
    except InsecureTransportError as error:  # a public URL that is plain http and not loopback
        return server.handle_response(*error())
    status, body, out_headers = server.create_token_response(request)
    if isinstance(body, dict) and body.get("error") == "invalid_client" and status != 401:
        # authlib answers 400 when the credentials came in the form; one answer (401) for every
        # failed client authentication, as RFC 6749 §5.2 allows, and no hint which part was wrong.
        status = 401
        out_headers = {**out_headers, "WWW-Authenticate": 'Basic error="invalid_client"'}
    if status == 200 and server.issued is not None and row is not None:
        scopes = scope_to_list(server.issued["scope"]) or []
        await TokenService(session=session).issue_for_client(row, server.issued["access_token"], scopes, expires_in)
        actor = Actor("client", row.id, row.name, row.organization_id)
        record(session, "auth.client_login", "api_client", row.id, "scope", actor=actor)
    elif status == 401:  # a wrong client id or secret: kept although the answer rolls the request back
        org_id, target = (row.organization_id, row.id) if row else (None, None)
        failed = anonymous(claimed or "")
        record(
            session, "auth.client_login_failed", "api_client", target, "client_id", actor=failed, organization_id=org_id
        )
        await session.commit()
    return status, body, out_headers
