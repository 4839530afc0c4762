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
from sqlalchemy.orm import Session, sessionmaker

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
    """Wrong name or password, or the account is locked or disabled: one message and the same
    work for all, so a guesser learns nothing about which names exist or are locked."""


REFUSED = "用户名或密码不对。连续输错 5 次会暂时锁定 15 分钟；忘了密码请找管理员重置。"


# Passwords that lists of leaked passwords put first, in the forms that reach 10 characters.
COMMON_PASSWORDS = frozenset("""
1234567890 0123456789 9876543210 0987654321 1111111111 0000000000 1234512345 1234554321 1122334455
1qaz2wsx3edc qwertyuiop asdfghjkl; qwertyuiopasdfghjkl password123 password1234 passw0rd123 p@ssw0rd123
iloveyou123 woaini1314 woaini520 5201314520 1314520520 abc1234567 abcd123456 a123456789 qwe1234567
123456789a 123456789q 1234567890a admin12345 admin123456 administrator root123456 huawei1234 zxcvbnm123
qwerty1234 1q2w3e4r5t 1q2w3e4r5t6y q1w2e3r4t5 aa12345678 aaa1234567 112233445566 123123123123
147258369 1472583690 7758521521 heze123456 hezeheze12 zhengwu123 zhengwu1234 console123 welcome123
changeme123 letmein123 football123 sunshine12 princess12 computer12 internet12 baseball12
""".split())


def check_password_rules(password: str, username: str = "") -> None:
    """At least 10 characters, not a well-known password, not a run or repetition, not the
    username: what a guesser tries first."""
    low = password.lower()
    if len(password) < 10:
        raise ValueError("密码至少 10 位 / the password needs at least 10 characters")
    steps = {ord(b) - ord(a) for a, b in zip(low, low[1:])}
    repeated = any(len(low) % n == 0 and low == low[:n] * (len(low) // n) for n in range(1, len(low) // 2 + 1))
    if (low in COMMON_PASSWORDS or steps <= {1} or steps <= {-1} or repeated or len(set(low)) < 5
            or (username and username.lower() in low)):
        raise ValueError("这个密码太常见或太有规律，容易被猜到，请换一个 / the password is too easy to guess")


class Accounts:
    def __init__(self, sessions: sessionmaker, max_failed: int = 5, lockout: dt.timedelta = dt.timedelta(minutes=15),
                 session_length: dt.timedelta = dt.timedelta(hours=8)) -> None:
        self._sessions = sessions
        self.max_failed, self.lockout, self.session_length = max_failed, lockout, session_length

    def create_user(self, username: str, password: str, role: str, actor: str = "command line") -> int:
        """A new account, audited as created by ``actor`` in the same transaction."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        if not username or len(username) > 64:
            raise ValueError("用户名为 1-64 个字符 / username of 1-64 characters")
        check_password_rules(password, username)
        with self._sessions() as s:
            if s.scalar(select(ConsoleUser.id).where(ConsoleUser.username == username)):
                raise ValueError(f"用户 {username} 已存在 / user {username} exists")
            user = ConsoleUser(username=username, password_hash=_hasher.hash(password), role=role, failed_logins=0)
            s.add(user)
            audited(s, actor, "create_user", detail=f"{username} ({role})")
            s.commit()
            return user.id

    def has_users(self) -> bool:
        with self._sessions() as s:
            return s.scalar(select(ConsoleUser.id).limit(1)) is not None

    def login(self, username: str, password: str) -> str:
        """A new session token, or LoginRefused. Repeated failures lock the account for a while."""
        with self._sessions() as s:
            user = s.scalar(select(ConsoleUser).where(ConsoleUser.username == username))
            usable = user is not None and user.active and not (user.locked_until and _aware(user.locked_until) > now())
            try:  # the hash is checked in every case, so every refusal takes as long
                _hasher.verify(user.password_hash if usable and user is not None else _DUMMY_HASH, password)
                right = usable
            except (VerificationError, InvalidHashError):
                right = False
            if not right or user is None:
                if usable and user is not None:
                    user.failed_logins += 1
                    if user.failed_logins >= self.max_failed:
                        user.locked_until = now() + self.lockout
                        user.failed_logins = 0
                    s.commit()
                raise LoginRefused(REFUSED)
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


    def change_user(self, user_id: int, action: str, actor: str, password: str = "") -> str:
        """An administrator's (``actor``'s) change to an account: ``disable``, ``enable``, ``unlock``
        or ``reset`` (a new password; the user's sessions end), audited in the same transaction.
        Returns the username; ValueError when refused."""
        with self._sessions() as s:
            user = s.get(ConsoleUser, user_id)
            if user is None:
                raise ValueError("没有这个用户 / no such user")
            if action == "disable":
                user.active = False
                s.execute(delete(ConsoleSession).where(ConsoleSession.user_id == user.id))
            elif action == "enable":
                user.active = True
            elif action == "unlock":
                user.locked_until, user.failed_logins = None, 0
            elif action == "reset":
                check_password_rules(password, user.username)
                user.password_hash = _hasher.hash(password)
                user.locked_until, user.failed_logins = None, 0
                s.execute(delete(ConsoleSession).where(ConsoleSession.user_id == user.id))
            else:
                raise ValueError("unknown action")
            audited(s, actor, f"user_{action}", detail=user.username)
            s.commit()
            return user.username


def csrf_ok(staff: Staff, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(staff.csrf_token.encode(), str(given).encode())


def audit(sessions: sessionmaker, username: str, action: str, conversation: str | None = None,
          detail: str | None = None) -> None:
    """An audit entry on its own: for what changes nothing else (a login, a reveal, an export)."""
    with sessions() as s:
        audited(s, username, action, conversation, detail)
        s.commit()


def audited(s: Session, username: str, action: str, conversation: str | None = None, detail: str | None = None) -> None:
    """An audit entry in the caller's transaction: a change and its entry are committed together or not at all."""
    s.add(AuditEntry(at=now(), username=username, action=action, conversation=conversation, detail=detail))
