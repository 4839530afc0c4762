"""Reminders: which subscriptions are due (the rules), and their delivery by SMS or WeChat subscribe
message, with quiet hours, a per-citizen limit, retries, and the result of every attempt recorded.

Rules are per topic and per occasion (a year's payment window, a year's certification): an occasion
has a due key, and ``reminders`` holds one row per (subscription, due key), so a citizen is reminded
once per occasion however often the scheduler runs. A reminder whose purpose is already served (the
citizen paid that year's medical insurance through us) is skipped, at queueing and again at delivery.

``Reminders.evaluate`` queues what is due (100,000 subscriptions: bench/RESULTS.md); ``deliver`` sends
what is queued and due. The services API runs both every ``REMINDER_CHECK_S``."""
from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import httpx
from sqlalchemy import and_, func, insert, select
from sqlalchemy.orm import Session, sessionmaker

from services.models import Bill, PaymentOrder
from services.calls import CallOriginator
from services.campaigns import KEY_PREFIX, CampaignView, Campaigns, for_reminder, sms_message
from services.sms import SmsMessage, SmsSender
from services.subscriptions import (PROGRESS_KEY, TOPICS, Reminder, SqlSubscriptions, Subscription, topic_name,
                                    wechat_target)
from textnorm.ids import is_valid_mobile

if TYPE_CHECKING:
    from services.container import Services
    from services.settings import Settings

log = logging.getLogger(__name__)
CHINA = dt.timezone(dt.timedelta(hours=8))
BATCH = 5000
Outcome = Literal["sent", "refused", "retry", "calling", "busy"]
# A reminder call not picked up by then (the assistant marks an answered one sent) is tried again.
CALL_ANSWER_WITHIN = dt.timedelta(minutes=15)
CALL_SLOT_WAIT = dt.timedelta(minutes=1)  # a reminder call waiting for one under way to end
# What an SMS attempt means for the reminder (services/sms.py Outcome): queued at the gateway is sent.
SMS_OUTCOMES: dict[str, Outcome] = {"sent": "sent", "queued": "sent", "opted_out": "refused", "rate_limited": "retry",
                                    "failed": "retry"}
RETRY_AFTER = (dt.timedelta(minutes=10), dt.timedelta(hours=1), dt.timedelta(hours=6))


@dataclass(frozen=True)
class Window:
    """A yearly window, as month-day pairs in China time: "09-01/12-31"."""

    start: tuple[int, int]
    end: tuple[int, int]

    @classmethod
    def parse(cls, text: str) -> "Window":
        try:
            a, b = text.split("/")
            start = tuple(int(x) for x in a.split("-"))
            end = tuple(int(x) for x in b.split("-"))
            dt.date(2024, *start), dt.date(2024, *end)  # a real month and day (2024: 02-29 too)
        except (ValueError, TypeError):
            raise ValueError(f"a window is MM-DD/MM-DD, not {text!r}") from None
        if len(start) != 2 or len(end) != 2 or end < start:
            raise ValueError(f"a window is MM-DD/MM-DD within one year, not {text!r}")
        return cls((start[0], start[1]), (end[0], end[1]))

    def holds(self, day: dt.date) -> bool:
        return self.start <= (day.month, day.day) <= self.end


@dataclass(frozen=True)
class Occasion:
    topic: str
    due_key: str
    text: str
    deadline: str  # 12月31日
    what: str  # for the SMS template (35 characters at most): 2027年度城乡居民医保开始缴费了


def occasions(day: dt.date, medical: Window, pension: Window) -> list[Occasion]:
    """What is due on ``day`` (China time), by topic."""
    due: list[Occasion] = []
    if medical.holds(day):
        year = day.year + 1  # paid in the autumn for the next year (年度)
        deadline = f"{medical.end[0]}月{medical.end[1]}日"
        due.append(Occasion("medical_insurance", f"medical_insurance:{year}",
                            TOPICS["medical_insurance"].text.format(year=year, deadline=deadline), deadline,
                            f"{year}年度城乡居民医保开始缴费了"))
    if pension.holds(day):
        deadline = f"{pension.end[0]}月{pension.end[1]}日"
        due.append(Occasion("pension_certification", f"pension_certification:{day.year}",
                            TOPICS["pension_certification"].text.format(deadline=deadline), deadline,
                            f"{day.year}年养老金领取资格认证开始了"))
    return due


class WeChatSubscribeSender:
    """WeChat's subscribe messages: the official account's 订阅通知 (``/cgi-bin/message/subscribe/bizsend``)
    and the mini-program's (``/cgi-bin/message/subscribe/send``), with the access token of each account
    cached until shortly before it expires."""

    PATHS = {"oa": "/cgi-bin/message/subscribe/bizsend", "mp": "/cgi-bin/message/subscribe/send"}
    REFUSED = {43101, 43107, 40003, 47003}  # the user did not accept this template / no quota / bad openid / data
    TOKEN_EXPIRED = {40001, 40014, 42001}

    def __init__(self, accounts: dict[str, tuple[str, str, str, str]], public_base_url: str,
                 http: httpx.AsyncClient | None = None) -> None:
        """``accounts``: "oa"/"mp" -> (api base, appid, secret, template id)."""
        self.accounts = accounts
        self.base_url = public_base_url.rstrip("/")
        self.http = http or httpx.AsyncClient(timeout=10)
        self._tokens: dict[str, tuple[str, float]] = {}

    async def _token(self, account: str, force: bool = False) -> str:
        cached = self._tokens.get(account)
        loop = asyncio.get_running_loop()
        if cached and not force and cached[1] > loop.time():
            return cached[0]
        base, appid, secret, _ = self.accounts[account]
        got = (await self.http.get(f"{base}/cgi-bin/token", params={
            "grant_type": "client_credential", "appid": appid, "secret": secret})).json()
        if "access_token" not in got:
            raise httpx.HTTPError(f"no access token (errcode {got.get('errcode')})")
        self._tokens[account] = (str(got["access_token"]), loop.time() + int(got.get("expires_in", 7200)) - 300)
        return self._tokens[account][0]

    async def send(self, account: str, openid: str, topic: str, deadline: str, what: str,
                   subject: str | None = None) -> tuple[Outcome, str]:
        """One subscribe message: the topic's name (thing1; with its subject: 办件…进度通知), the deadline
        or date (time2) and what to do or what happened (thing3)."""
        if account not in self.accounts:
            return "refused", f"no subscribe-message template for {account}"
        base, _, _, template = self.accounts[account]
        body = {"touser": openid, "template_id": template,
                "page": f"{self.base_url}{TOPICS[topic].page}" if account == "oa" else "pages/chat/index",
                "data": {"thing1": {"value": topic_name(topic, subject)[:20]}, "time2": {"value": deadline},
                         "thing3": {"value": what[:20]}}}
        try:
            for force in (False, True):
                answer = (await self.http.post(f"{base}{self.PATHS[account]}",
                                               params={"access_token": await self._token(account, force)},
                                               json=body)).json()
                code = int(answer.get("errcode") or 0)
                if code not in self.TOKEN_EXPIRED:
                    break
        except (httpx.HTTPError, ValueError) as exc:
            return "retry", f"WeChat unreachable: {type(exc).__name__}"
        if code == 0:
            return "sent", f"msgid {answer.get('msgid', '')}"
        return ("refused" if code in self.REFUSED else "retry"), f"errcode {code}"


class Reminders:
    def __init__(self, sessions: sessionmaker, sms: SmsSender, wechat: WeChatSubscribeSender | None, *,
                 medical: Window, pension: Window, quiet: tuple[int, int] = (21, 8), per_day: int = 2,
                 max_attempts: int = 3, calls: CallOriginator | None = None, max_calls: int = 4,
                 now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.timezone.utc)) -> None:
        self.sessions = sessions
        self.sms = sms
        self.wechat = wechat
        self.calls = calls
        self.max_calls = max_calls  # reminder calls under way at once (each holds a line and a gateway slot)
        self.medical, self.pension = medical, pension
        self.quiet, self.per_day, self.max_attempts = quiet, per_day, max_attempts
        self._now = now

    # -- the rules ---------------------------------------------------------------------------

    def evaluate(self) -> dict[str, int]:
        """Queue a reminder for every active subscription whose topic has an occasion today; returns
        how many were queued per topic. Runs in batches (memory stays flat with the number of subscriptions)."""
        now = self._now()
        queued: dict[str, int] = {}
        for occasion in occasions(now.astimezone(CHINA).date(), self.medical, self.pension):
            with self.sessions() as s:
                done = set(s.scalars(select(Reminder.subscription_id).where(Reminder.due_key == occasion.due_key)))
                ids = s.scalars(select(Subscription.id).where(Subscription.topic == occasion.topic,
                                                              Subscription.status == "active")
                                .execution_options(yield_per=BATCH))
                count, batch = 0, []
                for sub_id in ids:
                    if sub_id in done:
                        continue
                    batch.append({"subscription_id": sub_id, "due_key": occasion.due_key, "text": occasion.text,
                                  "status": "queued", "attempts": 0, "next_attempt_at": now})
                    if len(batch) >= BATCH:
                        count += self._insert(batch)
                        batch = []
                count += self._insert(batch)
            queued[occasion.topic] = count
        return queued

    def _insert(self, rows: list[dict[str, object]]) -> int:
        if rows:
            with self.sessions() as s:
                s.execute(insert(Reminder), rows)
                s.commit()
        return len(rows)

    def _acted_on(self, s: Session, sub: Subscription, due_key: str) -> bool:
        """The purpose is served: that year's medical insurance was paid through us by this citizen."""
        if sub.topic != "medical_insurance" or due_key.startswith(KEY_PREFIX):
            return False
        year = due_key.rsplit(":", 1)[-1]
        paid = s.scalar(select(func.count()).select_from(PaymentOrder).join(Bill, Bill.id == PaymentOrder.bill_id)
                        .where(and_(PaymentOrder.sender_id == sub.sender_id, PaymentOrder.status == "paid",
                                    Bill.bill_type == "medical_insurance", Bill.period == year)))
        return bool(paid)

    # -- delivery ----------------------------------------------------------------------------

    def _next_morning(self, now: dt.datetime) -> dt.datetime:
        local = now.astimezone(CHINA)
        morning = local.replace(hour=self.quiet[1], minute=0, second=0, microsecond=0)
        if local.hour >= self.quiet[1]:
            morning += dt.timedelta(days=1)
        return morning.astimezone(dt.timezone.utc)

    def _quiet(self, now: dt.datetime) -> bool:
        """Within the quiet hours (China time): "21-8" is 21:00 to 08:00; "8-8" is none at all."""
        hour = now.astimezone(CHINA).hour
        start, end = self.quiet
        if start == end:
            return False
        return start <= hour < end if start < end else (hour >= start or hour < end)

    async def deliver(self, limit: int = 200) -> dict[str, int]:
        """Send the queued reminders that are due, and call again those whose call nobody picked up;
        returns counts by what became of them. The database work runs in a worker thread, one step at
        a time with the one session: the services API's event loop keeps answering while a window's
        opening is delivered."""
        now = self._now()
        counts = {"sent": 0, "refused": 0, "retry": 0, "failed": 0, "skipped": 0, "later": 0, "calling": 0}
        with self.sessions() as s:
            due = await asyncio.to_thread(self._due, s, now, limit, counts)
            for reminder, sub in due:
                if not await asyncio.to_thread(self._ready, s, reminder, sub, now, counts):
                    continue
                outcome, result = await self._send(sub, reminder)  # no transaction open meanwhile
                await asyncio.to_thread(self._record, s, reminder, sub, now, outcome, result, counts)
            await asyncio.to_thread(s.commit)
        return counts

    def _due(self, s: Session, now: dt.datetime, limit: int,
             counts: dict[str, int]) -> list[tuple[Reminder, Subscription]]:
        """The reminders due now, oldest first; none within the quiet hours (those wait for the morning)."""
        due = [(r, sub) for r, sub in s.execute(
            select(Reminder, Subscription).join(Subscription, Subscription.id == Reminder.subscription_id)
            .where(Reminder.status.in_(("queued", "calling")), Reminder.next_attempt_at <= now)
            .order_by(Reminder.id).limit(limit)).all()]
        if due and self._quiet(now):
            for reminder, _ in due:
                reminder.next_attempt_at = self._next_morning(now)
            s.commit()
            counts["later"] = len(due)
            return []
        return due

    def _ready(self, s: Session, reminder: Reminder, sub: Subscription, now: dt.datetime,
               counts: dict[str, int]) -> bool:
        """Whether to send this reminder now: not a call still unanswered, not withdrawn or already
        acted on, not past the citizen's daily limit (each of those counted and recorded here)."""
        if reminder.status == "calling":  # the last call was not picked up in time
            s.refresh(reminder)
            if reminder.status == "calling":  # (not answered just now)
                self._missed(reminder, now, counts)
            return False
        s.refresh(sub, ["status"])  # withdrawn since the batch was read?
        # (an ended subscription, an application finished, still gets the notices queued before it ended)
        if sub.status == "cancelled" or self._acted_on(s, sub, reminder.due_key):
            reminder.status = "skipped"
            reminder.result = "已取消订阅" if sub.status == "cancelled" else "已经办了"
            counts["skipped"] += 1
            return False
        china_day = now.astimezone(CHINA).replace(hour=0, minute=0, second=0, microsecond=0)
        today = s.scalar(select(func.count()).select_from(Reminder).join(Subscription)
                         .where(Subscription.sender_id == sub.sender_id, Reminder.status == "sent",
                                Reminder.sent_at >= china_day.astimezone(dt.timezone.utc)))
        if (today or 0) >= self.per_day:
            reminder.next_attempt_at = self._next_morning(now)
            counts["later"] += 1
            return False
        s.commit()  # no transaction stays open while the gateway or WeChat is asked
        return True

    def _record(self, s: Session, reminder: Reminder, sub: Subscription, now: dt.datetime, outcome: Outcome,
                result: str, counts: dict[str, int]) -> None:
        """What became of one attempt, kept at once whatever happens to the next."""
        if outcome == "busy":  # as many reminder calls under way as the line takes: shortly
            reminder.next_attempt_at = now + CALL_SLOT_WAIT
            counts["later"] += 1
            s.commit()
            return
        reminder.attempts += 1
        reminder.result = result[:200]
        became: str = outcome
        if outcome == "sent":
            reminder.status, reminder.sent_at = "sent", now
        elif outcome == "calling":  # delivered when picked up (SqlSubscriptions.answered)
            reminder.status, reminder.next_attempt_at = "calling", now + CALL_ANSWER_WITHIN
        elif outcome == "refused":
            reminder.status = "refused"
            if result == "sms opted_out":  # the number replied TD: that is a withdrawal, recorded
                SqlSubscriptions.withdraw(s, sub, now, "短信回复退订")
        elif reminder.attempts >= self.max_attempts:
            reminder.status = became = "failed"
        else:
            reminder.next_attempt_at = now + RETRY_AFTER[min(reminder.attempts, len(RETRY_AFTER)) - 1]
        counts[became] += 1
        s.commit()

    async def deliver_for(self, seconds: float, batch: int = 200) -> dict[str, int]:
        """Deliver batch after batch while a whole batch was due, for about ``seconds``: a window's
        opening (every subscriber due at once) drains in hours, not days; the channels' own limits pace it."""
        loop = asyncio.get_running_loop()
        until = loop.time() + seconds
        total: dict[str, int] = {}
        while True:
            counts = await self.deliver(batch)
            for key, value in counts.items():
                total[key] = total.get(key, 0) + value
            if sum(counts.values()) < batch or loop.time() >= until:
                return total

    def _missed(self, reminder: Reminder, now: dt.datetime, counts: dict[str, int]) -> None:
        """A reminder call nobody picked up: called again after the retry pause, or given up."""
        reminder.result = "无人接听"
        if reminder.attempts >= self.max_attempts:
            reminder.status = "failed"
            counts["failed"] += 1
        else:
            reminder.status = "queued"
            reminder.next_attempt_at = now + RETRY_AFTER[min(reminder.attempts, len(RETRY_AFTER)) - 1]
            counts["retry"] += 1

    async def _send(self, sub: Subscription, reminder: Reminder) -> tuple[Outcome, str]:
        """Deliver one reminder: a yearly occasion's, a staff campaign's (its own words, its channel), or
        an application's progress notice (its news, dated today; never a call)."""
        if reminder.due_key.startswith(PROGRESS_KEY):
            number = reminder.due_key[len(PROGRESS_KEY):].split(":", 1)[0]
            progress = reminder.text.split("：", 1)[-1].rstrip("。")
            today = self._now().astimezone(CHINA)
            return await self._deliver(sub, reminder, SmsMessage("progress_update", {"number": number, "progress": progress}),
                                       f"{today.month}月{today.day}日", progress, by_call=False)
        if reminder.due_key.startswith(KEY_PREFIX):
            campaign = await asyncio.to_thread(self._campaign, reminder.due_key)
            if campaign is None:
                return "refused", "已撤销"
            return await self._deliver(sub, reminder, sms_message(campaign), campaign.deadline_text, campaign.what,
                                       by_call=sub.by_call)  # as the citizen agreed, whatever the campaign
        occasion = next((o for o in occasions(self._now().astimezone(CHINA).date(), self.medical, self.pension)
                         if o.due_key == reminder.due_key), None)
        if occasion is None:
            return "refused", "the occasion is over"
        message = SmsMessage("reminder", {"topic": TOPICS[sub.topic].name, "what": occasion.what,
                                          "deadline": occasion.deadline})
        return await self._deliver(sub, reminder, message, occasion.deadline, occasion.what, by_call=sub.by_call)

    def _campaign(self, due_key: str) -> CampaignView | None:
        with self.sessions() as s:
            return for_reminder(s, due_key)

    def _calls_under_way(self) -> int:
        with self.sessions() as s:
            return s.scalar(select(func.count()).select_from(Reminder).where(
                Reminder.status == "calling", Reminder.next_attempt_at > self._now())) or 0

    async def _deliver(self, sub: Subscription, reminder: Reminder, sms: SmsMessage, deadline: str, what: str, *,
                       by_call: bool) -> tuple[Outcome, str]:
        """On the channel the citizen subscribed on: a call or an SMS (the phone line), else WeChat."""
        if sub.channel == "phone" and by_call and self.calls is not None and sub.phone:
            if await asyncio.to_thread(self._calls_under_way) >= self.max_calls:
                return "busy", "calls busy"
            try:
                name = await asyncio.to_thread(self.calls.place, sub.phone, reminder.id)
            except (OSError, ValueError) as exc:
                return "retry", f"call not placed: {type(exc).__name__}"
            return "calling", f"call {name}"
        if sub.channel == "phone":
            if not sub.phone or not is_valid_mobile(sub.phone):
                return "refused", "no mobile number for an SMS"
            sent = await asyncio.to_thread(self.sms.send, sub.phone, sms)
            return SMS_OUTCOMES[sent], f"sms {sent}"
        target = wechat_target(sub.channel, sub.sender_id)
        if target is None or self.wechat is None:
            return "refused", "no way to reach this citizen"
        return await self.wechat.send(target[0], target[1], sub.topic, deadline, what, sub.subject)


def reminders_of(settings: "Settings", services: "Services") -> Reminders:
    """The scheduler as the settings describe it (WeChat accounts with a subscribe-message template)."""
    from services.container import reminder_accounts

    accounts = {account: (base, appid, secret.get_secret_value(), template) for account, base, appid, secret, template in (
        ("oa", settings.wechat_api_base, settings.wechat_appid, settings.wechat_secret, settings.wechat_reminder_template_id),
        ("mp", settings.miniprogram_api_base, settings.miniprogram_appid, settings.miniprogram_secret,
         settings.miniprogram_reminder_template_id)) if account in reminder_accounts(settings)}
    wechat = WeChatSubscribeSender(accounts, settings.public_base_url) if accounts else None
    calls = CallOriginator(settings.resolve(settings.reminder_call_spool), settings.reminder_call_channel,
                           settings.hotline_number) if settings.reminder_call_spool else None
    return Reminders(services.sessions, services.sms, wechat, medical=Window.parse(settings.reminder_medical_window),
                     pension=Window.parse(settings.reminder_pension_window), quiet=settings.quiet_hours,
                     per_day=settings.reminder_per_day, calls=calls, max_calls=settings.reminder_max_calls)


async def run_forever(reminders: Reminders, every_s: float,
                      sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
    """The services API's loop: queue what is due, send what is queued."""
    while True:
        await sleep(every_s)
        try:
            queued = await asyncio.to_thread(reminders.evaluate)
            counts = await reminders.deliver_for(every_s / 2)
            # staff's test messages of a campaign (the console queues them: it holds no SMS gateway)
            await asyncio.to_thread(Campaigns(reminders.sessions).send_tests, reminders.sms)
        except Exception:  # noqa: BLE001 - a database hiccup must not end the loop
            log.exception("reminders: evaluation or delivery failed")
            continue
        if any(queued.values()) or any(counts.values()):
            log.info("reminders: queued %s, delivered %s", queued, counts)
