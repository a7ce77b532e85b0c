"""Server-side browser sessions: started at sign-in, checked on every page, ended on the server.

The signed session cookie carries only a random session id (and flash messages). The id is stored
as its SHA-256 hash in ``web_session``; every page request looks it up, so a session ended here —
logout, "sign out everywhere", a password change or reset, a deactivated or deleted user, a
suspended organization — is refused at once by every web process, even from a copied cookie.
"""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID

from advanced_alchemy.exceptions import NotFoundError
from advanced_alchemy.repository import SQLAlchemyAsyncRepository
from advanced_alchemy.service import SQLAlchemyAsyncRepositoryService
from sqlalchemy import delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import noload

from app.clock import aware, utcnow
from app.tenants.models import Organization, Role, User, WebSession
from app.tenants.security import hash_secret, new_secret

#: the key of the session id in the (signed, encrypted) session cookie
SESSION_KEY = "sid"
#: ``last_seen_at`` is written at most this often per session
TOUCH_EVERY = timedelta(minutes=1)


async def end_user_sessions(db: AsyncSession, user_id: UUID, keep: UUID | None = None) -> int:
    """End every live session of ``user_id`` (but ``keep``, if given); how many were ended."""
    statement = update(WebSession).where(WebSession.user_id == user_id, WebSession.revoked_at.is_(None))
    if keep is not None:
        statement = statement.where(WebSession.id != keep)
    result = await db.execute(statement.values(revoked_at=utcnow()))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


class WebSessionRepository(SQLAlchemyAsyncRepository[WebSession]):
    model_type = WebSession
    count_with_window_function = False


class WebSessionService(SQLAlchemyAsyncRepositoryService[WebSession]):
    """Sessions are always reached through their owner (:meth:`live_of`, :meth:`end_one`) or their raw id."""

    repository_type = WebSessionRepository
    count_with_window_function = False

    async def start(
        self, user: User, *, ip: str, user_agent: str, max_age: int, replacing: str | None = None
    ) -> tuple[WebSession, str]:
        """A new session of ``user`` and the raw id for its cookie.

        ``replacing`` is the id the browser held before (another account, or a stale one): it is ended,
        so signing in always yields a fresh id (no session fixation)."""
        if replacing:
            await self.end_raw(replacing)
        now = utcnow()
        # the user's own dead sessions go here, so the table does not grow with every sign-in
        await self.repository.session.execute(
            delete(WebSession).where(
                WebSession.user_id == user.id,
                or_(WebSession.expires_at <= now, WebSession.revoked_at.is_not(None)),
            )
        )
        raw = new_secret("vws")
        row = await self.create(
            WebSession(
                token_hash=hash_secret(raw),
                user_id=user.id,
                expires_at=now + timedelta(seconds=max_age),
                last_seen_at=now,
                ip=ip[:64],
                user_agent=user_agent[:300],
            )
        )
        return row, raw

    async def resolve(self, raw: str) -> tuple[WebSession, User] | None:
        """The live session for a raw id with its user, or None. One query: every page request runs it.

        Refused: unknown, ended or expired sessions, inactive users, and (but for sysadmins) users
        whose organization is suspended or gone."""
        row = (
            await self.repository.session.execute(
                select(WebSession, User, Organization)
                .join(User, User.id == WebSession.user_id)
                .outerjoin(Organization, Organization.id == User.organization_id)
                .where(WebSession.token_hash == hash_secret(raw))
                .options(noload(User.organization))
            )
        ).first()
        if row is None:
            return None
        web, user, org = row
        if web.revoked_at is not None or aware(web.expires_at) <= utcnow() or not user.is_active:
            return None
        if user.role != Role.SYSADMIN and (org is None or org.suspended):
            return None
        return web, user

    def touch(self, web: WebSession) -> bool:
        """Note activity, at most once a minute; True when there is something to commit."""
        now = utcnow()
        if now - aware(web.last_seen_at) < TOUCH_EVERY:
            return False
        web.last_seen_at = now
        return True

    async def end_raw(self, raw: str) -> None:
        """End the session a cookie names (sign out); nothing happens for an unknown id."""
        await self.repository.session.execute(
            update(WebSession)
            .where(WebSession.token_hash == hash_secret(raw), WebSession.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        )

    async def live_of(self, user_id: UUID) -> list[WebSession]:
        """The user's live sessions, the most recently seen first."""
        rows = await self.repository.session.scalars(
            select(WebSession)
            .where(WebSession.user_id == user_id, WebSession.revoked_at.is_(None), WebSession.expires_at > utcnow())
            .order_by(WebSession.last_seen_at.desc(), WebSession.created_at.desc())
        )
        return list(rows)

    async def end_one(self, user_id: UUID, session_id: UUID) -> WebSession:
        """End one of the user's sessions; another user's (or an unknown) id is not found."""
        web = await self.get_one_or_none(WebSession.id == session_id, WebSession.user_id == user_id)
        if web is None:
            raise NotFoundError("Session not found")
        if web.revoked_at is None:
            web.revoked_at = utcnow()
            await self.repository.update(web)
        return web

    async def end_all(self, user_id: UUID, keep: UUID | None = None) -> int:
        return await end_user_sessions(self.repository.session, user_id, keep)


_BROWSERS = (
    ("Edg/", "Edge"),
    ("OPR/", "Opera"),
    ("Firefox/", "Firefox"),
    ("Chromium/", "Chromium"),
    ("Chrome/", "Chrome"),
    ("Safari/", "Safari"),
    ("curl/", "curl"),
)
_SYSTEMS = (
    ("Windows", "Windows"),
    ("Android", "Android"),
    ("iPhone", "iOS"),
    ("iPad", "iPadOS"),
    ("Mac OS X", "macOS"),
    ("CrOS", "ChromeOS"),
    ("Linux", "Linux"),
)


def describe_agent(user_agent: str) -> str:
    """A short label for a User-Agent header, like "Firefox on Linux" (the full header stays available)."""
    browser = next((name for marker, name in _BROWSERS if marker in user_agent), None)
    system = next((name for marker, name in _SYSTEMS if marker in user_agent), None)
    if browser and system:
        return f"{browser} on {system}"
    return browser or system or ("Unknown browser" if not user_agent else user_agent[:40])
