"""Per-organization service credentials (validated by the plugin, encrypted at rest, never shown again),
and the catalog of services that the API and the pages show."""

from __future__ import annotations

import asyncio
import math
import re
from typing import Any
from uuid import UUID

import msgspec
from advanced_alchemy.exceptions import NotFoundError
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.db.scoping import OrgScopedRepository, OrgScopedService
from app.errors import Conflict, ValidationProblem
from app.logging import get_logger
from app.plugins.base import CredentialsError, PluginInfo, prepare_credentials
from app.plugins.crypto import CredentialCipher, CredentialsUnavailable
from app.servicehost import schemas
from app.servicehost.models import ServiceCredential, ServiceStatus
from app.servicehost.ratelimit import MAX_RATE, MIN_RATE
from app.servicehost.registry import PluginEntry, PluginRegistry, load_registry, service_statuses

log = get_logger(__name__)

#: seconds a plugin's live credentials check may take in a request
VALIDATE_TIMEOUT = 30.0

_PATH = re.compile(r" - at `\$((?:\.[^`\[]+|\[\d+\])+)`$")
_NAMED = re.compile(r"^Object (?:missing required|contains unknown) field `([^`]+)`")


def convert_error(exc: msgspec.ValidationError) -> ValidationProblem:
    """A msgspec validation error as a 422 naming the field (``port``, ``servers[0].host``…)."""
    message = str(exc)
    field: str | None = None
    path = _PATH.search(message)
    prefix = path.group(1).lstrip(".") if path else ""
    named = _NAMED.match(message)
    if named:
        field = f"{prefix}.{named.group(1)}" if prefix else named.group(1)
    elif prefix:
        field = prefix
    detail = _PATH.sub("", message)
    return ValidationProblem(detail, field)


class CredentialRepository(OrgScopedRepository[ServiceCredential]):
    model_type = ServiceCredential


class CredentialService(OrgScopedService[ServiceCredential]):
    """The credentials of one organization. Construct with the caller's organization::

    CredentialService(session=session, organization_id=org_id, settings=settings)
    """

    repository_type = CredentialRepository

    def __init__(
        self,
        session: AsyncSession,
        organization_id: UUID,
        *,
        settings: Settings,
        registry: PluginRegistry | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(session=session, organization_id=organization_id, **kwargs)
        self.registry = registry if registry is not None else load_registry(settings)
        self.cipher = CredentialCipher(settings.security)

    def _info(self, name: str) -> PluginInfo:
        entry = self.registry.entry(name)
        if entry is None:
            raise NotFoundError(f"No service named {name!r}.")
        if entry.info is None:
            raise Conflict(f"The {name} service is blacklisted ({entry.reason}); its credentials cannot be handled.")
        return entry.info

    async def _row(self, name: str) -> ServiceCredential | None:
        return await self.get_one_or_none(ServiceCredential.service == name)

    @staticmethod
    def check_rate(info: PluginInfo, value: Any) -> float | None:
        """An organization's send rate for the service: a number of sends per second within the bounds,
        never above the plugin's own rate (an organization may only lower it); None clears it."""
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ValidationProblem("Enter the rate as a number of messages per second.", schemas.RATE_FIELD)
        if not MIN_RATE <= value <= MAX_RATE:
            raise ValidationProblem(
                f"The rate must be between {MIN_RATE:g} and {MAX_RATE:g} messages per second.", schemas.RATE_FIELD
            )
        if info.rate_per_second is not None and value > info.rate_per_second:
            raise ValidationProblem(
                f"{info.title} sends at most {info.rate_per_second:g} messages per second; "
                "an organization can only lower that rate.",
                schemas.RATE_FIELD,
            )
        return float(value)

    async def put(self, name: str, raw: Any) -> ServiceCredential:
        """Validate ``raw`` (a JSON object) with the plugin, encrypt it and save it (replacing any).

        Its optional ``rate_per_second`` is not a credential: it is the organization's own send rate
        (:meth:`check_rate`), stored in the clear beside the ciphertext; absent, the saved rate stays."""
        info = self._info(name)
        ctype = info.credentials_type
        if ctype is None:
            raise ValidationProblem(f"The {name} service needs no credentials.")
        if not isinstance(raw, dict):
            raise ValidationProblem("Credentials must be a JSON object.")
        raw = dict(raw)
        rate_given = schemas.RATE_FIELD in raw
        rate = self.check_rate(info, raw.pop(schemas.RATE_FIELD, None))
        try:
            credentials = msgspec.convert(raw, ctype)
        except msgspec.ValidationError as exc:
            raise convert_error(exc) from exc
        plugin = self.registry.get(name)
        if plugin is None:
            entry = self.registry.entry(name)
            reason = entry.reason if entry else "not installed"
            raise Conflict(f"The {name} service is blacklisted ({reason}); credentials cannot be checked now.")

        async def check(credentials: Any) -> Any:
            await plugin.validate_credentials(credentials)
            # what the provider needs registered for this organization (Telegram: its webhook)
            return await prepare_credentials(plugin, credentials, self.organization_id)

        try:
            credentials = await asyncio.wait_for(check(credentials), timeout=VALIDATE_TIMEOUT)
        except CredentialsError as exc:
            raise ValidationProblem(str(exc) or "The service refused these credentials.") from exc
        except TimeoutError as exc:
            raise ValidationProblem(f"Checking the credentials took longer than {VALIDATE_TIMEOUT:g} s.") from exc
        except Exception as exc:
            log.exception("credentials check crashed", service=name)
            raise ValidationProblem(
                f"The {name} service could not check these credentials ({type(exc).__name__})."
            ) from exc
        token = self.cipher.encrypt(self.organization_id, name, msgspec.to_builtins(credentials))
        row = await self._row(name)
        if row is None:
            return await self.repository.add(ServiceCredential(service=name, ciphertext=token, rate_per_second=rate))
        row.ciphertext = token
        if rate_given:
            row.rate_per_second = rate
        return await self.repository.update(row)

    async def set_rate(self, name: str, rate: float | None) -> ServiceCredential:
        """Set (None: clear) the organization's own send rate on ``name``, on its saved credentials."""
        info = self._info(name)
        if info.credentials_type is None:
            raise ValidationProblem(
                f"The {name} service needs no credentials, so it has no rate of its own for an organization.",
                schemas.RATE_FIELD,
            )
        row = await self._row(name)
        if row is None:
            raise NotFoundError(f"No credentials for {name!r}: save them before setting a rate.")
        row.rate_per_second = self.check_rate(info, rate)
        return await self.repository.update(row)

    async def get_decrypted(self, name: str) -> Any | None:
        """The organization's credentials for ``name`` as the plugin's credentials type, or None if it has none.

        Raises :class:`CredentialsUnavailable` (a :class:`PluginError`) when stored credentials cannot be
        used: undecryptable, bound to another organization, or no longer valid for the plugin's type.
        """
        row = await self._row(name)
        return None if row is None else self.decode(name, row.ciphertext)

    def decode(self, name: str, ciphertext: str) -> Any:
        """This organization's stored credentials ``ciphertext`` for ``name`` as the plugin's credentials type
        (:meth:`get_decrypted`'s rules; the workers read the ciphertext with their attempts)."""
        entry = self.registry.entry(name)
        if entry is None or entry.info is None:
            raise CredentialsUnavailable(f"The {name} service is not installed or failed to load.")
        ctype = entry.info.credentials_type
        raw = self.cipher.decrypt(self.organization_id, name, ciphertext)
        if ctype is None:
            return raw
        try:
            return msgspec.convert(raw, ctype)
        except msgspec.ValidationError as exc:
            raise CredentialsUnavailable(
                f"The stored {name} credentials no longer fit the service ({exc}); save them again."
            ) from exc

    async def has(self, name: str) -> bool:
        return await self._row(name) is not None

    async def names(self) -> set[str]:
        """The services this organization has credentials for."""
        return set(await self.rates())

    async def rates(self) -> dict[str, float | None]:
        """The services this organization has credentials for, with the send rate it set on each."""
        return {row.service: row.rate_per_second for row in await self.list()}

    async def rate(self, name: str) -> tuple[bool, float | None]:
        """(whether the organization has credentials for ``name``, the send rate it set on them)."""
        row = await self._row(name)
        return row is not None, row.rate_per_second if row else None

    async def remove(self, name: str) -> None:
        """Delete the organization's credentials for ``name``; :class:`NotFoundError` if it has none."""
        row = await self._row(name)
        if row is None:
            raise NotFoundError(f"No credentials for {name!r}.")
        await self.repository.delete(row.id)


# -- the catalog: what GET /services (and the services page) show ------------------------------


def _service(
    name: str, row: ServiceStatus | None, entry: PluginEntry | None, has: bool, rate: float | None = None
) -> schemas.Service:
    rates = {
        "default_rate_per_second": entry.info.rate_per_second if entry and entry.info else None,
        "rate_per_second": rate,
    }
    if row is not None:
        return schemas.Service(
            name=name,
            title=row.title,
            address_field=row.address_field,
            status="available" if row.status == "available" else "blacklisted",
            reason=row.reason,
            checked_at=row.checked_at,
            needs_credentials=row.needs_credentials,
            has_credentials=has,
            **rates,
        )
    if entry is None:  # pragma: no cover - callers pass one of both
        raise NotFoundError(f"No service named {name!r}.")
    return schemas.Service(
        name=name,
        title=entry.title,
        address_field=entry.address_field,
        status=entry.status,
        reason=entry.reason,
        checked_at=entry.checked_at,
        needs_credentials=entry.needs_credentials,
        has_credentials=has,
        **rates,
    )


class ServiceCatalog:
    """Every installed service with its health and whether an organization has credentials for it.

    The recorded check (``service_status``, shared by every process) is authoritative; a plugin this
    process knows but that nobody recorded yet is shown as this process last saw it.
    ``credentials`` is the caller's organization's :class:`CredentialService`, or None (sysadmin).
    """

    def __init__(self, session: AsyncSession, registry: PluginRegistry, credentials: CredentialService | None) -> None:
        self.session = session
        self.registry = registry
        self.credentials = credentials

    async def _known(self) -> tuple[dict[str, ServiceStatus], list[str]]:
        rows = await service_statuses(self.session)
        return rows, sorted(set(rows) | set(self.registry.names()))

    async def exists(self, name: str) -> bool:
        _, names = await self._known()
        return name in names

    async def all(self) -> list[schemas.Service]:
        rows, names = await self._known()
        mine = await self.credentials.rates() if self.credentials else {}
        return [
            _service(name, rows.get(name), self.registry.entry(name), name in mine, mine.get(name)) for name in names
        ]

    async def get(self, name: str) -> schemas.ServiceDetail:
        """One service with its credentials' JSON Schema; :class:`NotFoundError` for an unknown name."""
        rows, names = await self._known()
        if name not in names:
            raise NotFoundError(f"No service named {name!r}.")
        entry = self.registry.entry(name)
        has, rate = await self.credentials.rate(name) if self.credentials else (False, None)
        base = _service(name, rows.get(name), entry, has, rate)
        info = entry.info if entry else None
        return schemas.ServiceDetail(
            **msgspec.structs.asdict(base),
            description=info.description if info else "",
            credentials_schema=schemas.credentials_schema(info.credentials_type) if info else None,
        )
