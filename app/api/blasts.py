"""REST controller of blasts."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from advanced_alchemy.filters import LimitOffset, OrderBy
from advanced_alchemy.service import OffsetPagination
from litestar import Controller, Request, Response, get, post
from litestar.params import Parameter

from app.blasts import schemas
from app.blasts.models import Blast, BlastState
from app.blasts.services import BlastService
from app.messaging.services import request_hash
from app.queues import DEFAULT_QUEUE
from app.tenants.deps import org_service
from app.tenants.guards import requires_scope
from app.tenants.principal import Principal

READ = requires_scope("blasts:read")
WRITE = requires_scope("blasts:write")
NEWEST = OrderBy(field_name="created_at", sort_order="desc")
IdempotencyKey = Annotated[str | None, Parameter(header="Idempotency-Key", max_length=255, required=False)]


class BlastController(Controller):
    path = "/blasts"
    tags = ["blasts"]
    dependencies = {"blasts": org_service(BlastService, what="A blast")}

    @post("", summary="Send a blast (201 at once; the workers fan it out; Idempotency-Key supported)", guards=[WRITE])
    async def create_blast(
        self,
        request: Request[Any, Any, Any],
        blasts: BlastService,
        principal: Principal,
        data: schemas.BlastCreate,
        idempotency_key: IdempotencyKey = None,
    ) -> Response[schemas.Blast]:
        queue = request.app.state.queues[DEFAULT_QUEUE]
        blast, replayed = await blasts.submit(data, queue, principal.id, idempotency_key, request_hash(data))
        out = (await blasts.present([blast]))[0]
        return Response(out, status_code=201, headers={"Idempotent-Replayed": "true"} if replayed else {})

    @get("", summary="List blasts (filter by state)", guards=[READ])
    async def list_blasts(
        self,
        blasts: BlastService,
        limit_offset: LimitOffset,
        blast_state: Annotated[schemas.BlastStateName | None, Parameter(query="state")] = None,
    ) -> OffsetPagination[schemas.Blast]:
        filters = [Blast.state == BlastState(blast_state)] if blast_state else []
        items, total = await blasts.list_and_count(*filters, limit_offset, NEWEST)
        return OffsetPagination(
            items=await blasts.present(items), total=total, limit=limit_offset.limit, offset=limit_offset.offset
        )

    @get("/{blast_id:uuid}", summary="Get a blast with its stats and progress", guards=[READ])
    async def get_blast(self, blasts: BlastService, blast_id: UUID) -> schemas.Blast:
        return (await blasts.present([await blasts.get(blast_id)]))[0]

    @post("/{blast_id:uuid}/cancel", summary="Cancel a blast (409 once finished)", guards=[WRITE], status_code=200)
    async def cancel_blast(self, blasts: BlastService, blast_id: UUID) -> schemas.Blast:
        return (await blasts.present([await blasts.cancel(blast_id)]))[0]
