"""SAQ jobs of the plugin system: the periodic health re-check."""

from __future__ import annotations

from typing import Any

from saq import CronJob

from app.plugins.registry import check_and_record, load_registry

#: every minute: a plugin that starts passing is restored within a minute, one that breaks is caught
RECHECK_CRON = "* * * * *"


async def recheck_plugins(ctx: Any) -> dict[str, str]:
    """Re-run the health check of this process's plugins and record it instance-wide.

    Needs ``ctx["settings"]`` and ``ctx["sessions"]`` (an async session maker), as the worker's
    start-up provides. Returns ``{name: status}``.
    """
    registry = load_registry(ctx["settings"])
    entries = await check_and_record(registry, ctx["sessions"])
    return {entry.name: entry.status for entry in entries}


#: register with the worker: ``Worker(..., cron_jobs=[*CRON_JOBS])``
CRON_JOBS = [CronJob(recheck_plugins, cron=RECHECK_CRON, timeout=120)]
