"""A plugin with a send rate, installed through an entry point for the app and the worker processes.

``paced`` declares ``rate_per_second = 5``, takes credentials (so an organization can set its own
rate on them) and sends to the organization's own endpoint (no contact address needed). Its provider
message id records the moment the plugin was called and the worker process that called it:
``paced-<pid>-<epoch seconds>-<message id>``.
"""

from __future__ import annotations

import importlib
import textwrap
import uuid
from pathlib import Path

import pytest

NAME = "paced"
RATE = 5.0

SOURCE = textwrap.dedent(
    f"""
    import os
    import time

    import msgspec

    from app.plugins.base import PluginInfo


    class PacedCredentials(msgspec.Struct):
        label: str = "paced"


    class Paced:
        info = PluginInfo(
            name={NAME!r}, title="Paced test service", address_field=None,
            credentials_type=PacedCredentials, rate_per_second={RATE!r},
        )

        def __init__(self, context):
            self.context = context

        async def self_test(self):
            return None

        async def validate_credentials(self, credentials):
            return None

        async def send(self, message, address, credentials):
            return f"paced-{{os.getpid()}}-{{time.time():.6f}}-{{message.id}}"

        async def parse_webhook(self, request):
            return []
    """
)


def install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Put the distribution on this process' path; the root to give worker processes as PYTHONPATH."""
    suffix = uuid.uuid4().hex[:8]
    root = tmp_path / f"paced-site-{suffix}"
    root.mkdir()
    module = f"paced_plugin_{suffix}"
    (root / f"{module}.py").write_text(SOURCE)
    dist = root / f"paced_plugin_{suffix}-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: paced-plugin-{suffix}\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[voluble.plugins]\n{NAME} = {module}:Paced\n")
    monkeypatch.syspath_prepend(str(root))
    importlib.invalidate_caches()
    return root


def sent_at(provider_message_id: str) -> tuple[int, float]:
    """(the worker's pid, the moment it called the plugin) from a ``paced`` provider message id."""
    _, pid, moment, _ = provider_message_id.split("-", 3)
    return int(pid), float(moment)
