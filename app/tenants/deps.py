"""One way to get a service: for the API, the pages, the jobs and the CLI.

* :func:`acting_organization` — the organization a request acts on, with one answer on both faces for a
  sysadmin (who belongs to none): **403** for what belongs to an organization (decision 0018).
* :func:`org_service` — a Litestar provider of an organization-scoped service built for the caller's
  organization: ``dependencies = {"contacts": org_service(ContactService)}``.
* :func:`service` — a provider of a service that is not scoped (organizations, accounts, tokens).
* :func:`scoped` — the same construction outside a request (jobs, the CLI), from a session and an id.

A service's extra keyword-only constructor arguments (``settings``, ``registry``…) are asked of
Litestar's dependency injection by name, so a new service needs no hand-written ``provide_*``.
"""

import inspect
from collections.abc import Callable
from typing import Any, TypeVar, get_type_hints
from uuid import UUID

from litestar import Request
from litestar.connection import ASGIConnection
from litestar.di import Provide
from litestar.exceptions import NotAuthorizedException
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.config import request_session
from app.errors import Forbidden, ValidationProblem
from app.tenants.principal import Principal

S = TypeVar("S")

#: what a sysadmin is told when they reach something that belongs to an organization
NO_ORGANIZATION = "{what} belongs to an organization and sysadmins have none: sign in as a member of one."


class NoOrganization(Forbidden):
    """A sysadmin (no organization) reached something that belongs to one (403 on both faces)."""

    def __init__(self, what: str = "This resource") -> None:
        super().__init__(NO_ORGANIZATION.format(what=what))


def acting_organization(
    principal: Principal, organization_id: UUID | None = None, *, what: str = "This resource"
) -> UUID:
    """The organization a request acts on: the caller's own. A sysadmin may name one where an endpoint
    takes ``organization_id`` (omitting it there is a missing field: 422); elsewhere a sysadmin is
    refused with :class:`NoOrganization` (403)."""
    if principal.is_sysadmin and organization_id is not None:
        return organization_id
    if principal.organization_id is not None:
        return principal.organization_id
    raise NoOrganization(what)


def organization_required(principal: Principal, organization_id: UUID | None) -> UUID:
    """For the endpoints where a sysadmin names the organization: 422 when they did not."""
    if principal.is_sysadmin and organization_id is None:
        raise ValidationProblem("organization_id is required for a sysadmin.", "organization_id")
    return acting_organization(principal, organization_id)


def _extras(cls: type) -> dict[str, inspect.Parameter]:
    """The keyword-only constructor arguments of ``cls`` besides the session and organization."""
    params = inspect.signature(cls).parameters
    return {
        name: p
        for name, p in params.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and name not in {"session", "organization_id"}
    }


def _provider(cls: type[S], head: list[inspect.Parameter], build: Callable[..., S]) -> Provide:
    hints = get_type_hints(cls.__init__)
    extras = _extras(cls)
    params = head + [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=hints.get(name, Any)) for name in extras
    ]
    # only the extras without a default are asked for; an optional one is passed when Litestar has it
    params = [p for p in params if p.name not in extras or extras[p.name].default is inspect.Parameter.empty]

    def provide(**kwargs: Any) -> S:
        return build(**kwargs)

    provide.__signature__ = inspect.Signature(params, return_annotation=cls)  # type: ignore[attr-defined]
    provide.__annotations__ = {p.name: p.annotation for p in params} | {"return": cls}
    provide.__name__ = provide.__qualname__ = f"provide_{cls.__name__}"
    return Provide(provide, sync_to_thread=False)


# The providers take the request, not the ``db_session`` and ``principal`` dependencies: the same session
# and principal (request_session is what ``db_session`` provides, principal_of what ``principal`` does),
# without two more dependencies to resolve, which Litestar resolves concurrently in a task group of their
# own on every request (docs/performance.md).
_REQUEST = inspect.Parameter("request", inspect.Parameter.KEYWORD_ONLY, annotation=Request)


def principal_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    """The caller (set by the authentication middleware); 401 without one."""
    user = connection.scope.get("user")
    if not isinstance(user, Principal):
        raise NotAuthorizedException("Authentication required.")
    return user


def org_service(cls: type[S], *, what: str = "This resource") -> Provide:
    """A provider of ``cls`` built for the caller's organization (a sysadmin: 403)."""

    def build(*, request: Request[Any, Any, Any], **extras: Any) -> S:
        organization_id = acting_organization(principal_of(request), what=what)
        return cls(session=request_session(request), organization_id=organization_id, **extras)  # type: ignore[call-arg]

    return _provider(cls, [_REQUEST], build)


def service(cls: type[S]) -> Provide:
    """A provider of a service that sees every organization (sysadmin pages, accounts, tokens)."""

    def build(*, request: Request[Any, Any, Any], **extras: Any) -> S:
        return cls(session=request_session(request), **extras)  # type: ignore[call-arg]

    return _provider(cls, [_REQUEST], build)


def scoped(cls: type[S], session: AsyncSession, organization_id: UUID, **extras: Any) -> S:
    """``cls`` for one organization outside a request (a job, the CLI): the same construction."""
    return cls(session=session, organization_id=organization_id, **extras)  # type: ignore[call-arg]
