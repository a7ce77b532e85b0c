"""Business rules of blasts: accept one (audience counted in SQL), report on it, cancel it.

The fan-out itself runs in the workers (:mod:`app.blasts.fanout`); see docs/decisions/0022-blast-fan-out.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC
from typing import Any
from uuid import UUID

from saq import Queue
from sqlalchemy import case, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import noload

from app.audit.services import record
from app.blasts import schemas
from app.blasts.fanout import members, release_held
from app.blasts.jobs import enqueue_step
from app.blasts.models import ACTIVE, Blast, BlastState
from app.blasts.present import present, state_counts
from app.clock import utcnow
from app.contacts.models import Category, Contact
from app.db.config import write_transaction
from app.db.scoping import OrgScopedRepository, OrgScopedService
from app.errors import Conflict, FieldErrors, ValidationProblem
from app.messaging import credits, state, templating
from app.messaging.models import Message, MessageState
from app.messaging.services import ServicechainService

CANCEL_CHUNK = 500
#: seconds before the first fan-out step of a blast sent now
FIRST_STEP_DELAY = 1.0


class BlastRepository(OrgScopedRepository[Blast]):
    model_type = Blast


def _unknown(ids: Sequence[UUID], found: set[UUID]) -> str | None:
    missing = [str(i) for i in dict.fromkeys(ids) if i not in found]
    if not missing:
        return None
    more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
    return f"Not found in this organization: {', '.join(missing[:5])}{more}."


class BlastService(OrgScopedService[Blast]):
    repository_type = BlastRepository

    @property
    def session(self) -> AsyncSession:
        return self.repository.session

    # ------------------------------------------------------------------ accepting

    async def _replay(self, key: str, digest: str) -> Blast | None:
        blast = await self.get_one_or_none(Blast.idempotency_key == key)
        if blast is not None and blast.request_hash != digest:
            raise Conflict("This Idempotency-Key was used with a different request body.")
        return blast

    async def _own(self, column: Any, org_column: Any, ids: Sequence[UUID]) -> set[UUID]:
        if not ids:
            return set()
        found = await self.session.scalars(
            select(column).where(org_column == self.organization_id, column.in_(list(set(ids))))
        )
        return set(found)

    async def _check_ids(self, contact_ids: Sequence[UUID], category_ids: Sequence[UUID]) -> None:
        """Every id must be one of this organization's: another organization's is never used (422)."""
        errors: dict[str, str] = {}
        own_contacts = await self._own(Contact.id, Contact.organization_id, contact_ids)
        if problem := _unknown(contact_ids, own_contacts):
            errors["contact_ids"] = problem
        own_categories = await self._own(Category.id, Category.organization_id, category_ids)
        if problem := _unknown(category_ids, own_categories):
            errors["category_ids"] = problem
        if errors:
            raise FieldErrors(errors)

    async def accept(
        self, data: schemas.BlastCreate, created_by: UUID | None, idempotency_key: str | None, digest: str
    ) -> tuple[Blast, bool]:
        """Validate and store a blast with its audience and the credits for all of it; commits.
        Returns (blast, replayed). Nothing is stored when anything is refused."""
        try:
            async with write_transaction(self.session):
                if idempotency_key and (existing := await self._replay(idempotency_key, digest)) is not None:
                    return existing, True
                return await self._store(data, created_by, idempotency_key, digest), False
        except IntegrityError:  # the same key raced in from another request
            if idempotency_key and (existing := await self._replay(idempotency_key, digest)) is not None:
                return existing, True
            raise

    async def _store(
        self, data: schemas.BlastCreate, created_by: UUID | None, idempotency_key: str | None, digest: str
    ) -> Blast:
        try:
            templating.check(data.content)
        except templating.TemplateProblem as exc:
            raise ValidationProblem(str(exc), "content") from exc
        chain = await ServicechainService(session=self.session, organization_id=self.organization_id).get(
            data.servicechain_id
        )
        if not data.contact_ids and not data.category_ids:
            raise ValidationProblem("Name the audience: contact_ids and/or category_ids.", "contact_ids")
        await self._check_ids(data.contact_ids, data.category_ids)
        who = members(self.organization_id, data.contact_ids, data.category_ids)
        opted_out_sum = func.coalesce(func.sum(case((Contact.opted_out.is_(True), 1), else_=0)), 0)
        total, opted_out = (await self.session.execute(select(func.count(), opted_out_sum).where(who))).one()
        audience = int(total) - int(opted_out)
        if audience <= 0:
            raise ValidationProblem(
                f"The audience is empty ({opted_out} opted-out contact(s) left out).", "contact_ids"
            )
        await credits.reserve(self.session, self.organization_id, audience)  # 402: nothing is stored
        now = utcnow()
        send_at = data.send_at.replace(tzinfo=UTC) if data.send_at and data.send_at.tzinfo is None else data.send_at
        scheduled = send_at is not None and send_at > now
        blast = await self.create(
            Blast(
                name=data.name,
                content=data.content,
                servicechain_id=chain.id,
                route=list(chain.services),
                state=BlastState.SCHEDULED if scheduled else BlastState.FANNING_OUT,
                send_at=send_at if scheduled else None,
                audience=audience,
                skipped_opted_out=int(opted_out),
                credits_held=audience,
                # the first fan-out step snapshots it (fanout.snapshot): the POST only counts it
                selection={
                    "contact_ids": [str(i) for i in dict.fromkeys(data.contact_ids)],
                    "category_ids": [str(i) for i in dict.fromkeys(data.category_ids)],
                },
                started_at=None if scheduled else now,
                created_by=created_by,
                idempotency_key=idempotency_key,
                request_hash=digest if idempotency_key else None,
            )
        )
        return blast

    async def submit(
        self, data: schemas.BlastCreate, queue: Queue, created_by: UUID | None, idempotency_key: str | None, digest: str
    ) -> tuple[Blast, bool]:
        """:meth:`accept`, then start the fan-out (a scheduled blast waits for ``blast_tick``)."""
        blast, replayed = await self.accept(data, created_by, idempotency_key, digest)
        if not replayed and blast.state == BlastState.FANNING_OUT:
            # the first step snapshots the audience: a second later, not beside this request's answer
            await enqueue_step(queue, blast.id, blast.generation, FIRST_STEP_DELAY)
        return blast, replayed

    # ------------------------------------------------------------------ reporting

    async def counts(self, blast_ids: Sequence[UUID]) -> dict[UUID, dict[str, int]]:
        """Messages per state of each blast, in one query."""
        return await state_counts(self.session, self.organization_id, blast_ids)

    async def present(self, blasts: Sequence[Blast]) -> list[schemas.Blast]:
        """The API's view of these blasts, with their stats and progress (one query for all of them)."""
        counts = await self.counts([b.id for b in blasts])
        return [present(b, counts[b.id]) for b in blasts]

    # ------------------------------------------------------------------ cancelling

    async def cancel(self, blast_id: UUID) -> Blast:
        """Stop a blast: no message is created after this, messages not yet handed to a service fail
        (``cancelled``, credit released); those already with a worker finish. 409 once finished."""
        async with write_transaction(self.session):
            await self.get(blast_id)
            # a fan-out step holds the blast's row while it creates a batch: this waits for it, and no
            # step creates anything once the state is cancelled
            cancelled = await self.session.scalar(
                update(Blast)
                .where(Blast.id == blast_id, Blast.organization_id == self.organization_id, Blast.state.in_(ACTIVE))
                .values(state=BlastState.CANCELLED, completed_at=utcnow(), updated_at=utcnow())
                .returning(Blast.id)
                .execution_options(synchronize_session=False)
            )
            if cancelled is None:
                raise Conflict("This blast has finished; there is nothing left to cancel.")
            await release_held(self.session, blast_id, self.organization_id)
            record(self.session, "blast.cancelled", "blast", blast_id, organization_id=self.organization_id)
        await self._fail_pending(blast_id)
        return await self.get(blast_id, auto_expunge=False)

    async def _fail_pending(self, blast_id: UUID) -> None:
        while True:
            async with write_transaction(self.session):
                ids = list(
                    await self.session.scalars(
                        select(Message.id)
                        .where(
                            Message.organization_id == self.organization_id,
                            Message.blast_id == blast_id,
                            Message.state == MessageState.PENDING,
                        )
                        .limit(CANCEL_CHUNK)
                    )
                )
                moved = await state.move_many(self.session, ids, MessageState.FAILED, failure_reason="cancelled")
                await credits.release_many(self.session, self.organization_id, moved)
            if not ids:
                return

    # ------------------------------------------------------------------ before sending (the create page)

    async def audience_count(self, contact_ids: Sequence[UUID], category_ids: Sequence[UUID]) -> tuple[int, int]:
        """(who would get the blast, opted-out members left out) for this selection, counted as
        :meth:`accept` counts it: the union, each contact once; ids of other organizations count nothing."""
        if not contact_ids and not category_ids:
            return 0, 0
        opted_out_sum = func.coalesce(func.sum(case((Contact.opted_out.is_(True), 1), else_=0)), 0)
        who = members(self.organization_id, contact_ids, category_ids)
        total, opted_out = (await self.session.execute(select(func.count(), opted_out_sum).where(who))).one()
        return int(total) - int(opted_out), int(opted_out)

    async def sample_members(
        self, contact_ids: Sequence[UUID], category_ids: Sequence[UUID], limit: int = 20
    ) -> list[Contact]:
        """The first audience members (in the fan-out's order, opted-out ones left out): whom a preview
        may be rendered for."""
        if not contact_ids and not category_ids:
            return []
        who = members(self.organization_id, contact_ids, category_ids)
        query = (
            select(Contact)
            .where(who, Contact.opted_out.is_(False))
            .order_by(Contact.id)
            .limit(limit)
            .options(noload(Contact.categories))
        )
        return list(await self.session.scalars(query))
