"""Staff accounts: argon2 password hashes, server-side sessions, CSRF tokens, lock-out, roles,
and the audit log."""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, select
from sqlalchemy.orm import sessionmaker

from services.models import AuditEntry, ConsoleSession, ConsoleUser

ROLES = ("reviewer", "supervisor", "admin")
RANK = {role: n for n, role in enumerate(ROLES)}
_hasher = PasswordHasher()
# Verifying against this keeps a login for an unknown user as slow as one for a known user.
_DUMMY_HASH = _hasher.hash("not a password " + secrets.token_hex(8))


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Staff:
    id: int
    username: str
    role: str
    csrf_token: str

    def at_least(self, role: str) -> bool:
        return RANK[self.role] >= RANK[role]


class LoginRefused(Exception):
    """Wrong name or password, or the account is locked (the message says which, for staff)."""


def check_password_rules(password: str) -> None:
    if len(password) < 10:
        raise ValueError("密码至少 10 位 / the password needs at least 10 characters")


class Accounts:
    def __init__(self, sessions: sessionmaker, max_failed: int = 5, lockout: dt.timedelta = dt.timedelta(minutes=15),
                 session_length: dt.timedelta = dt.timedelta(hours=8)) -> None:
        self._sessions = sessions
        self.max_failed, self.lockout, self.session_length = max_failed, lockout, session_length

    def create_user(self, username: str, password: str, role: str) -> int:
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        if not username or len(username) > 64:
            raise ValueError("用户名为 1-64 个字符 / username of 1-64 characters")
        check_password_rules(password)
        with self._sessions() as s:
            if s.scalar(select(ConsoleUser.id).where(ConsoleUser.username == username)):
                raise ValueError(f"用户 {username} 已存在 / user {username} exists")
            user = ConsoleUser(username=username, password_hash=_hasher.hash(password), role=role, failed_logins=0)
            s.add(user)
            s.commit()
            return user.id

    def has_users(self) -> bool:
        with self._sessions() as s:
            return s.scalar(select(ConsoleUser.id).limit(1)) is not None

    def login(self, username: str, password: str) -> str:
        """A new session token, or LoginRefused. Repeated failures lock the account for a while."""
        with self._sessions() as s:
            user = s.scalar(select(ConsoleUser).where(ConsoleUser.username == username))
            if user is None or not user.active:
                try:
                    _hasher.verify(_DUMMY_HASH, password)
                except VerificationError:
                    pass
                raise LoginRefused("用户名或密码不对")
            if user.locked_until and _aware(user.locked_until) > now():
                raise LoginRefused("登录失败次数太多，账户已暂时锁定，请稍后再试")
            try:
                _hasher.verify(user.password_hash, password)
            except (VerificationError, InvalidHashError):
                user.failed_logins += 1
                if user.failed_logins >= self.max_failed:
                    user.locked_until = now() + self.lockout
                    user.failed_logins = 0
                s.commit()
                raise LoginRefused("用户名或密码不对") from None
            user.failed_logins, user.locked_until = 0, None
            if _hasher.check_needs_rehash(user.password_hash):
                user.password_hash = _hasher.hash(password)
            token = secrets.token_urlsafe(32)
            s.add(ConsoleSession(token_hash=token_hash(token), user_id=user.id, csrf_token=secrets.token_urlsafe(32),
                                 created_at=now(), expires_at=now() + self.session_length))
            s.execute(delete(ConsoleSession).where(ConsoleSession.expires_at < now()))
            s.commit()
            return token

    def staff_for(self, token: str | None) -> Staff | None:
        if not token:
            return None
        with self._sessions() as s:
            row = s.execute(select(ConsoleSession, ConsoleUser).join(ConsoleUser, ConsoleUser.id == ConsoleSession.user_id)
                            .where(ConsoleSession.token_hash == token_hash(token))).first()
            if row is None:
                return None
            session, user = row
            if _aware(session.expires_at) < now() or not user.active:
                return None
            return Staff(user.id, user.username, user.role, session.csrf_token)

    def logout(self, token: str) -> None:
        with self._sessions() as s:
            s.execute(delete(ConsoleSession).where(ConsoleSession.token_hash == token_hash(token)))
            s.commit()


def csrf_ok(staff: Staff, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(staff.csrf_token.encode(), str(given).encode())


def audit(sessions: sessionmaker, username: str, action: str, conversation: str | None = None,
          detail: str | None = None) -> None:
    with sessions() as s:
        s.add(AuditEntry(at=now(), username=username, action=action, conversation=conversation, detail=detail))
        s.commit()
