"""The password-reset mail goes through a real SAQ worker process to a real SMTP server."""

from __future__ import annotations

import asyncio
import dataclasses
import email
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.queues import make_queue
from app.tenants.flows import request_password_reset
from app.tenants.models import Role
from app.tenants.services import AccountService, PasswordResetService
from tests.conftest import World
from tests.helpers import free_port, wait_for, worker_env


class Inbox:
    def __init__(self) -> None:
        self.messages: list[email.message.Message] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield inbox, port
    controller.stop()


@pytest.fixture
def queue_settings(settings: Settings) -> Settings:
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    return dataclasses.replace(settings, redis=dataclasses.replace(settings.redis, queue_prefix=prefix))


def start_worker(settings: Settings, smtp_port: int) -> subprocess.Popen[bytes]:
    env = worker_env(
        settings,
        VOLUBLE_PUBLIC_URL="https://voluble.example.com",
        VOLUBLE_MAIL_BACKEND="smtp",
        VOLUBLE_SMTP_HOST="127.0.0.1",
        VOLUBLE_SMTP_PORT=str(smtp_port),
        VOLUBLE_MAIL_FROM="no-reply@voluble.example.com",
    )
    return subprocess.Popen([sys.executable, "-m", "app", "workers", "run"], env=env)


async def test_password_reset_mail_is_sent_by_a_worker(
    queue_settings: Settings,
    world: World,
    sessions: async_sessionmaker[AsyncSession],
    smtp: tuple[Inbox, int],
) -> None:
    inbox, smtp_port = smtp
    org = await world.org()
    user = await world.user(org, Role.USER)
    worker = start_worker(queue_settings, smtp_port)
    queue = make_queue(queue_settings)
    await queue.connect()
    try:
        async with sessions() as session:
            accounts = AccountService(session=session)
            await request_password_reset(accounts, queue, user.email)
            await request_password_reset(accounts, queue, "nobody@example.com")  # says nothing, sends nothing
        await wait_for(lambda: len(inbox.messages) >= 1, timeout=30)
        await asyncio.sleep(0.5)
        assert len(inbox.messages) == 1
        mail = inbox.messages[0]
        assert mail["To"] == user.email
        assert mail["From"] == "no-reply@voluble.example.com"
        body = mail.get_payload(decode=True).decode()
        match = re.search(r"https://voluble\.example\.com/reset-password/(\S+)", body)
        assert match, body
        raw = match.group(1)
        async with sessions() as session:
            resets = PasswordResetService(session=session)
            accounts = AccountService(session=session)
            assert await resets.valid(raw) is not None
            assert await resets.consume(raw, "a brand new password", accounts) is not None
            await session.commit()
        async with sessions() as session:
            resets = PasswordResetService(session=session)
            assert await resets.valid(raw) is None  # single use
            assert await AccountService(session=session).authenticate(user.email, "a brand new password")
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=15)
        except subprocess.TimeoutExpired:
            worker.kill()
            raise
        await queue.disconnect()
    assert worker.returncode == 0
