"""``voluble credentials rotate-key``: re-encrypt every organization's service credentials under the newest key.

Run it once every process reads ``VOLUBLE_CREDENTIALS_KEY=new,old`` (new first): the web processes and
workers keep reading both keys meanwhile, so nothing stops. Rows are taken in batches (one transaction
each); a row is written back only if it still holds the ciphertext that was read, so credentials an org
admin saves during the run are never overwritten with older ones. Running it again is harmless: rows
already under the newest key are counted and left alone.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import click

from app.config import Settings, get_settings

DEFAULT_BATCH = 500


@dataclass
class RotationReport:
    rotated: int = 0
    current: int = 0
    #: rows that changed while the command ran (saved again meanwhile, so already under the newest key)
    changed: int = 0
    #: (organization id, service) of the rows no configured key decrypts
    unreadable: list[tuple[UUID, str]] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.rotated + self.current + self.changed + len(self.unreadable)


async def rotate_credentials(
    sessions: Any, settings: Settings, *, batch_size: int = DEFAULT_BATCH, dry_run: bool = False
) -> RotationReport:
    """Re-encrypt every :class:`ServiceCredential` not yet under the newest key, ``batch_size`` rows at a time."""
    from sqlalchemy import select, update

    from app.plugins.crypto import CredentialCipher, CredentialsUnavailable
    from app.servicehost.models import ServiceCredential

    cipher = CredentialCipher(settings.security)
    report = RotationReport()
    last: UUID | None = None
    while True:
        async with sessions() as session:
            query = select(
                ServiceCredential.id,
                ServiceCredential.organization_id,
                ServiceCredential.service,
                ServiceCredential.ciphertext,
            ).order_by(ServiceCredential.id)
            if last is not None:
                query = query.where(ServiceCredential.id > last)
            rows = (await session.execute(query.limit(batch_size))).all()
            if not rows:
                return report
            for row_id, organization_id, service, ciphertext in rows:
                if cipher.is_current(ciphertext):
                    report.current += 1
                    continue
                try:
                    rotated = cipher.rotate(ciphertext)
                except CredentialsUnavailable:
                    report.unreadable.append((organization_id, service))
                    continue
                if dry_run:
                    report.rotated += 1
                    continue
                written = await session.execute(
                    update(ServiceCredential)
                    .where(ServiceCredential.id == row_id, ServiceCredential.ciphertext == ciphertext)
                    .values(ciphertext=rotated)
                    .execution_options(synchronize_session=False)
                )
                if getattr(written, "rowcount", 0) == 1:
                    report.rotated += 1
                else:
                    report.changed += 1
            await session.commit()
            last = rows[-1][0]


async def _rotate(settings: Settings, batch_size: int, dry_run: bool) -> RotationReport:
    import app.audit  # noqa: F401  (the audit listener: saved credentials are recorded, by the system)
    from app.db.config import make_sessions

    engine, sessions = make_sessions(settings)
    try:
        return await rotate_credentials(sessions, settings, batch_size=batch_size, dry_run=dry_run)
    finally:
        await engine.dispose()


@click.group(name="credentials", help="Manage the encryption of organizations' service credentials.")
def credentials_group() -> None:
    pass


@credentials_group.command(
    name="rotate-key",
    help="Re-encrypt every organization's service credentials under the first key of VOLUBLE_CREDENTIALS_KEY.",
)
@click.option("--batch-size", type=click.IntRange(1, 10_000), default=DEFAULT_BATCH, show_default=True)
@click.option("--dry-run", is_flag=True, help="Only count what would be re-encrypted; write nothing.")
def rotate_key(batch_size: int, dry_run: bool) -> None:
    settings = get_settings()
    if not settings.security.credentials_keys:
        raise click.ClickException(
            "VOLUBLE_CREDENTIALS_KEY is not set. Set it to the new key followed by the old ones, newest first "
            "(NEW,OLD), on every process, then run this again."
        )
    from sqlalchemy.exc import SQLAlchemyError

    try:
        report = asyncio.run(_rotate(settings, batch_size, dry_run))
    except SQLAlchemyError as exc:
        raise click.ClickException(
            f"The credentials could not be read or written ({type(exc).__name__}: {str(exc).splitlines()[0]}). "
            "Is VOLUBLE_DATABASE_URL right and the database upgraded (voluble database upgrade)?"
        ) from exc
    verb = "would be re-encrypted" if dry_run else "re-encrypted"
    click.echo(
        f"{report.total} credentials: {report.rotated} {verb}, {report.current} already under the newest key, "
        f"{report.changed} saved again meanwhile, {len(report.unreadable)} unreadable.",
        err=True,
    )
    if report.unreadable:
        for organization_id, service in report.unreadable:
            click.echo(f"  unreadable: organization {organization_id}, service {service}", err=True)
        raise click.ClickException(
            "Some credentials cannot be decrypted with any configured key: add the key they were saved under "
            "to VOLUBLE_CREDENTIALS_KEY and run this again, or have those organizations save them again."
        )
    if report.changed:
        click.echo("Some credentials were saved while this ran: run it again to confirm them.", err=True)
    elif not dry_run:
        click.echo("Every credential is under the newest key: the older keys can now be dropped.", err=True)
