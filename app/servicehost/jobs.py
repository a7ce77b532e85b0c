"""SAQ jobs of the plugin host: the periodic health re-check."""

from __future__ import annotations

from saq import CronJob

from app.queues import JobContext
from app.servicehost.registry import check_and_record, load_registry

#: every five minutes: a plugin that starts passing is restored, one that breaks is caught, within that delay
RECHECK_CRON = "*/5 * * * *"


async def recheck_plugins(ctx: JobContext) -> dict[str, str]:
    """Re-run the health check of this process's plugins and record it instance-wide.

    Needs ``ctx["settings"]`` and ``ctx["sessions"]`` (an async session maker), as the worker's
    start-up provides. Returns ``{name: status}``.
    """
    registry = load_registry(ctx["settings"])
    entries = await check_and_record(registry, ctx["sessions"])
    return {entry.name: entry.status for entry in entries}


#: the ``default`` queue's worker runs these (app/worker/runner.py: ``cron_jobs=[..., *CRON_JOBS]``)
CRON_JOBS = [CronJob(recheck_plugins, cron=RECHECK_CRON, timeout=120, retries=1)]
