"""How a WeChat message is answered, whatever it says: the delivery rules of both WeChat channels,
with the clock, the sleep and the store calls injected so they can be tested without waiting.

- WeChat delivers a message up to four times (0, 5, 10, 15 s). The first delivery claims it
  (``wechat_store``) and starts the turn; a later one waits for that turn's reply and never starts
  another.
- A reply ready by the deadline (4 s after the request arrived) goes back in the response (the
  official account's passive reply); otherwise ``success`` now and the reply later as a
  customer-service message. When the turns under way say a new one cannot make the deadline
  (``wechat_pace``), ``success`` goes out at once. A channel without passive replies (the
  mini-program) always answers ``success`` and sends its texts as customer-service messages.
- A turn that ends in a hand-off hands the citizen to WeChat's human customer service: the
  response is ``transfer_customer_service`` (to ``kf_account`` if one is set), the bot's texts go as
  customer-service messages, and until the citizen is handed back (the console) or ``human_s`` passes
  without a message from them, each of their messages is transferred again without a turn.
- A turn that failed (the services were down) gets the apology; the message is kept and run again
  every ``retry_s`` until it is answered, the answer going out as a customer-service message.
- Every message being answered is kept too (the channel writes it, ``in_flight``) and held by the
  worker answering it (a lease renewed while it works, ``HOLD_S``), until its reply is out. When a
  Rasa replica dies mid-turn, WeChat's retries reach another replica, which sees the message taken;
  once the dead worker's lease runs out, a retry round takes the message over and the reply goes out
  as a customer-service message. Nothing is lost and nothing is answered twice.
- A citizen's messages run in the order they came: a message waits until every earlier message of
  the same citizen still being answered is answered (also one whose worker died, until another takes
  it over), for at most ``ORDER_WAIT_S``; a retry round leaves a citizen's later messages for the next
  round when it cannot take an earlier one.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Dict, List, Optional, Set, Union

from channels.wechat_pace import TurnPace
from channels.wechat_protocol import pseudonym
from channels.wechat_store import Claim, Human, Reply, Store, citizen_key

logger = logging.getLogger(__name__)

APOLOGY = "不好意思，系统暂时有点问题。您的消息已经记下了，好了以后马上回复您。"
POLL_S = 0.1
HUMAN_S = 30 * 60  # WeChat itself stops forwarding to agents after 30 min of an unclosed session
# A message being answered is held by its worker: a lease of HOLD_S, renewed every third of it while
# the turn runs and until the reply is out. A worker that dies stops renewing; another worker's
# retry round then takes the message over (and answers it once: the channel looks for the turn in
# the tracker before running it again).
HOLD_S = 10.0
# How long a message waits for an earlier one of the same citizen: a dead worker's message is taken
# over once its lease lapses, by WeChat's retry at 10 or 15 s or else by a retry round (``retry_s``).
ORDER_WAIT_S = 90.0


@dataclass(frozen=True)
class Outcome:
    """What a turn produced: the bot's texts, and whether it handed the citizen to a human."""
    texts: List[str]
    handoff: bool = False


@dataclass(frozen=True)
class Answer:
    """The response to one delivery: ``reply`` (passive texts), ``transfer`` or ``success``.
    ``first``: the first answer to this message (a repeat or replay must not send again what the
    first one sent beside the response, e.g. the rest of a reply too long for one passive reply)."""
    kind: str
    texts: List[str]
    kf_account: str = ""
    first: bool = False


@dataclass(frozen=True)
class Failed:
    """A turn that produced no reply (the services were down): what to run again later."""
    text: str
    metadata: Dict[str, Any]


SUCCESS = Answer("success", [])

Turn = Callable[[], Awaitable[Union[Outcome, Failed]]]
RetryTurn = Callable[[str, str, Dict[str, Any]], Awaitable[Union[Outcome, Failed]]]  # (openid, text, metadata)
Send = Callable[[str, List[str]], Awaitable[bool]]  # customer-service messages to an openid


async def _offload(fn: Callable[..., Any], *args: Any) -> Any:
    """A store call off the event loop (SQLite may wait on a lock; Redis on the network)."""
    return await asyncio.to_thread(fn, *args)


async def _wait(task: "asyncio.Future[Any]", timeout: float) -> None:
    await asyncio.wait({task}, timeout=max(0.0, timeout))


class Delivery:
    def __init__(self, store: Store, account: str, channel: str, send: Send, *, passive: bool,
                 deadline_s: float = 4.0, pace: Optional[TurnPace] = None, kf_account: str = "",
                 human_s: float = HUMAN_S, retry_s: float = 60,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time,
                 sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
                 wait: Callable[["asyncio.Future[Any]", float], Awaitable[None]] = _wait,
                 offload: Callable[..., Awaitable[Any]] = _offload) -> None:
        self.store = store
        self.account = account
        self.channel = channel
        self.send = send
        self.passive = passive
        self.deadline_s = deadline_s
        self.pace = pace or TurnPace()
        self.kf_account = kf_account
        self.human_s = human_s
        self.retry_s = retry_s
        self.clock = clock
        self.wall = wall
        self.sleep = sleep
        self.wait = wait
        self.call = offload
        self._tasks: Set["asyncio.Future[Any]"] = set()
        self._retrying = False
        self._kept_failed: Set[str] = set()  # messages _run kept as failed: not dropped when let go
        self._forever: Optional["asyncio.Future[Any]"] = None
        # Runs a kept message again; the channel sets it once it has Rasa's on_new_message.
        self.retry_turn: Optional[RetryTurn] = None
        # What a message taken over from a worker that died was already answered (the channel reads
        # the tracker), or None when its turn never ran.
        self.resume: Optional[Callable[[str, str], Awaitable[Optional[Outcome]]]] = None

    # -- one delivery ---------------------------------------------------------------------------
    async def deliver(self, key: str, openid: str, started: float, *, turn: Optional[Turn] = None,
                      immediate: Optional[List[str]] = None, transferable: bool = True,
                      keep: Optional[Dict[str, Any]] = None) -> Answer:
        """The answer to one delivery of the message ``key`` from ``openid``, which arrived at
        ``started`` (``clock``). ``turn`` runs the message through Rasa; ``immediate`` answers it
        without a turn (an unsupported type). While the citizen is with a human, a ``transferable``
        message (the citizen's own, not an event) goes to the human service and anything else is
        left unanswered: the bot does not speak to a citizen a person is looking after. ``keep``: the
        message as a retry round runs it again (sender, text, metadata, message id), kept with the claim
        until it is answered, so that another worker answers it if this one dies."""
        until = started + self.deadline_s
        human = await self.call(self.store.with_human, self.account, openid)
        claim: Claim = await self.call(self.store.claim, key, HOLD_S if turn is not None else 0,
                                       {**keep, "in_flight": True} if keep is not None and turn is not None else None)
        if claim.state == "pending" and turn is not None:
            # A repeated delivery while the message is being answered: never a second turn, unless the
            # worker that took it died (its hold lapsed): then this one answers it, once.
            holding = await self._hold(key)
            if holding is not None:
                return await self._take_over(key, openid, started, turn, holding)
        if claim.state != "new":
            return self._answer(await self.wait_for_reply(key, claim, until), openid)
        if human is not None:
            if turn is not None:  # no turn after all: nothing to hold or keep
                await self._let_go(key, None)
            reply = Reply([])
            if transferable:  # the citizen is still there: the human service's time runs from now
                await self._hand_over(openid, human)
                reply = Reply([], transfer=human.kf_account)
            await self.call(self.store.finish, key, reply)
            return self._answer(reply, openid, first=True)
        if turn is None:
            reply = Reply(list(immediate or []))
            await self.call(self.store.finish, key, reply)
            return self._answer(reply, openid, first=True)
        return await self._answer_turn(key, openid, started, turn, self._renewing(key))

    async def _take_over(self, key: str, openid: str, started: float, turn: Turn,
                         holding: "asyncio.Future[Any]") -> Answer:
        """Answer a message whose worker died: from the tracker if its turn ran there (the channel's
        ``resume``), else by running the turn."""
        logger.warning("a %s message held by a worker that stopped is taken over", self.channel)
        resumed = await self.resume(key, openid) if self.resume is not None else None
        if resumed is not None:
            async def answered() -> Union[Outcome, Failed]:
                return resumed
            turn = answered
        return await self._answer_turn(key, openid, started, turn, holding)

    async def _answer_turn(self, key: str, openid: str, started: float, turn: Turn,
                           holding: Optional["asyncio.Future[Any]"]) -> Answer:
        until = started + self.deadline_s
        # Judged before this turn joins the queue: could its reply still make the deadline?
        late = self.clock() - started + self.pace.expected_wait() > self.deadline_s
        task = asyncio.ensure_future(self._run(key, openid, turn))
        if not late:
            await self.wait(task, until - self.clock())
            if task.done():
                reply = task.result()
                # The reply stored, the hold ended and the message forgotten in one step: a worker that
                # dies now leaves WeChat's retries the stored reply and nothing for another to answer again.
                if holding is not None:
                    holding.cancel()
                kept = key in self._kept_failed
                self._kept_failed.discard(key)
                await self.call(self.store.finish, key, reply, True, not kept)
                return self._answer(reply, openid, first=True)
        # Too slow for an answer in the response, or the queue says it would be: success now, the
        # reply later (a hand-off that comes late takes effect with the citizen's next message).
        await self.call(self.store.finish, key, Reply([]))
        self.spawn(self._send_later(openid, task, key, holding))
        return SUCCESS

    async def _hold(self, key: str) -> Optional["asyncio.Future[Any]"]:
        """Lease ``key`` to this worker and keep renewing it; None when another worker holds it."""
        try:
            if not await self.call(self.store.lease, key, HOLD_S):
                return None
        except Exception:  # noqa: BLE001 - the store is away: answer anyway, unheld
            logger.exception("a %s message could not be held", self.channel)
            return None
        return self._renewing(key)

    def _renewing(self, key: str) -> "asyncio.Future[Any]":
        """Renew this worker's lease on ``key`` every third of ``HOLD_S`` until cancelled."""
        async def renew() -> None:
            while True:
                await self.sleep(HOLD_S / 3)
                try:
                    await self.call(self.store.renew, key)
                except Exception:  # noqa: BLE001 - try again; past HOLD_S another worker may take it
                    logger.warning("a %s message's hold could not be renewed", self.channel)
        return asyncio.ensure_future(renew())

    async def _let_go(self, key: str, holding: Optional["asyncio.Future[Any]"]) -> None:
        """The reply is out: forget the message being answered (a message kept as failed stays) and
        end the hold."""
        if holding is not None:
            holding.cancel()
        try:
            if key in self._kept_failed:
                self._kept_failed.discard(key)
            else:
                await self.call(self.store.drop_failed, key)
            await self.call(self.store.unlease, key)
        except Exception:  # noqa: BLE001 - a retry round may answer it again; logged
            logger.exception("a %s message answered could not be let go", self.channel)

    def _answer(self, reply: Reply, openid: str, first: bool = False) -> Answer:
        """A stored reply as this channel answers it; texts that cannot ride in the response go as
        customer-service messages (all of them on the mini-program; the official account's beside a transfer)."""
        if reply.transfer is not None:
            if reply.texts:
                self.spawn(self.send_texts(openid, reply.texts))
            return Answer("transfer", [], reply.transfer, first)
        if not reply.texts:
            return SUCCESS
        if self.passive:
            return Answer("reply", reply.texts, first=first)
        self.spawn(self.send_texts(openid, reply.texts))
        return SUCCESS

    async def wait_for_reply(self, key: str, claim: Claim, until: float) -> Reply:
        """The stored reply of a message another delivery took, waiting for it until ``until``;
        none (``success``) when it is not ready by then (it will come as a customer-service message)."""
        while claim.state == "pending" and self.clock() < until:
            await self.sleep(POLL_S)
            claim = await self.call(self.store.claim, key)
        if claim.state == "done" and claim.reply is not None and (self.passive or claim.reply.transfer is not None):
            return claim.reply if claim.reply.transfer is None else Reply([], claim.reply.transfer)
        return Reply([])  # the first delivery's answer carried the texts already

    async def replayed(self, key: str, openid: str, started: float) -> Optional[Answer]:
        """A signed, byte-identical resend of a message already taken: its stored answer (None
        when the message was never taken, which stays refused)."""
        claim = await self.call(self.store.peek, key)
        if claim is None:
            return None
        return self._answer(await self.wait_for_reply(key, claim, started + self.deadline_s), openid)

    async def _run(self, key: str, openid: str, turn: Turn) -> Reply:
        """The reply to a message; never raises (an error in the turn or the store is the apology,
        and the message is kept when it can be: a citizen is never left with nothing)."""
        if await self._in_order(key, openid) and (human := await self._with_human(openid)) is not None:
            # An earlier message, answered while this one waited, handed the citizen to a person: the bot
            # does not answer over them; this message goes to the human service too.
            await self._hand_over(openid, human)
            return Reply([], transfer=human.kf_account)
        self.pace.started()
        try:
            outcome = await turn()
            if isinstance(outcome, Failed):  # the services are down: keep the message, answer it when back
                await self.call(self.store.keep_failed, key, {"sender": openid, "text": outcome.text,
                                                              "metadata": outcome.metadata})
                self._kept_failed.add(key)
                self.start_retrying()
                return Reply([APOLOGY])
            if outcome.handoff:
                await self._hand_over(openid)
                return Reply(outcome.texts, transfer=self.kf_account)
            return Reply(outcome.texts)
        except Exception:  # noqa: BLE001 - logged without the message
            logger.exception("a %s turn for %s failed", self.channel, pseudonym(openid))
            return Reply([APOLOGY])
        finally:
            self.pace.finished()

    async def _in_order(self, key: str, openid: str) -> bool:
        """Wait until no earlier message of this citizen is still being answered (at most
        ``ORDER_WAIT_S``; a store error ends the wait: the message is answered, perhaps out of turn).
        True when it waited: what the earlier messages did (a hand-off) may bear on this one."""
        until = self.clock() + ORDER_WAIT_S
        citizen = citizen_key(self.account, openid)
        waited = False
        while True:
            try:
                first = await self.call(self.store.first_in_flight, citizen)
            except Exception:  # noqa: BLE001 - answered now rather than never
                logger.warning("a %s message's place among its citizen's could not be read", self.channel)
                return waited
            if first is None or first == key:
                return waited
            if self.clock() >= until:
                logger.warning("a %s message ran before an earlier one of %s was answered", self.channel,
                               pseudonym(openid))
                return waited
            waited = True
            await self.sleep(POLL_S)

    async def _with_human(self, openid: str) -> Optional[Human]:
        try:
            human: Optional[Human] = await self.call(self.store.with_human, self.account, openid)
            return human
        except Exception:  # noqa: BLE001 - the store is away: the turn runs (as it would have)
            logger.warning("a %s citizen's hand-off could not be read", self.channel)
            return None

    async def _hand_over(self, openid: str, already: Optional[Human] = None) -> None:
        """The citizen is with a human from now (or still, ``already``) until ``human_s`` from now."""
        now = self.wall()
        human = already or Human(self.account, openid, self.channel, self.kf_account, now, now)
        await self.call(self.store.hand_to_human, Human(human.account, human.openid, human.channel, human.kf_account,
                                                        human.since, now + self.human_s))

    async def _send_later(self, openid: str, task: "asyncio.Future[Reply]", key: str = "",
                          holding: Optional["asyncio.Future[Any]"] = None) -> None:
        reply = await task  # _run never raises
        if reply.texts:
            await self.send_texts(openid, reply.texts)
        if key:
            await self._let_go(key, holding)

    async def send_texts(self, openid: str, texts: List[str]) -> bool:
        try:
            sent = await self.send(openid, ["\n\n".join(texts)])  # one message, as a passive reply would be
        except Exception:  # noqa: BLE001 - a background send must not die silently
            logger.exception("a %s reply to %s failed", self.channel, pseudonym(openid))
            sent = False
        if not sent:
            logger.warning("a %s reply to %s could not be delivered", self.channel, pseudonym(openid))
        return sent

    def spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def settle(self) -> None:
        """Wait for the customer-service messages under way (tests; shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # -- failed turns ---------------------------------------------------------------------------
    def start_retrying(self, forever: bool = False) -> None:
        """Run the kept messages again every ``retry_s`` until none is left (``forever``: keep
        looking, for messages another worker held when it died). Called for a new failure, and by the
        channel when the server starts (messages kept before a restart are not forgotten)."""
        if forever and self.retry_turn is not None:
            self._forever = asyncio.ensure_future(self._retry_failed(forever=True))
        elif not self._retrying and self.retry_turn is not None:
            self._retrying = True
            self.spawn(self._retry_failed())

    async def _retry_failed(self, forever: bool = False) -> None:
        try:
            while True:
                await self.sleep(self.retry_s)
                try:
                    if not await self._retry_round() and not forever:
                        return
                except Exception:  # noqa: BLE001 - a store or network error: try again next round
                    logger.exception("retrying kept %s messages failed", self.channel)
        finally:
            if not forever:
                self._retrying = False

    async def _retry_round(self) -> bool:
        """One round over this account's kept messages; False when none is left. Each message is
        leased while it runs (with several Rasa workers, one runs it) and looked up again after the
        lease (another worker may have answered it since the list was read). A citizen now with a
        human is left for later: the bot does not answer over the agent."""
        assert self.retry_turn is not None
        waiting = await self.call(self.store.failed, self.account)
        if not waiting:
            return False
        later: Set[str] = set()  # citizens with an earlier message left: theirs wait for the next round
        for key, kept in waiting:
            openid = kept["sender"]
            if openid in later:
                continue
            if await self.call(self.store.with_human, self.account, openid) is not None:
                later.add(openid)
                continue
            holding = await self._hold(key)
            if holding is None:  # another worker is answering it
                later.add(openid)
                continue
            try:
                if not await self.call(self.store.still_failed, key):
                    continue
                if kept.get("in_flight") and self.passive:
                    claim = await self.call(self.store.peek, key)
                    if claim is not None and claim.state == "done" and claim.reply is not None and claim.reply.texts:
                        # Its reply was stored for WeChat's retries before its worker stopped: sent already.
                        await self.call(self.store.drop_failed, key)
                        continue
                metadata = {**kept.get("metadata", {}), "retry_of": key}
                if kept.get("message_id"):  # taken over from a worker that died: answered once
                    metadata["message_id"] = kept["message_id"]
                outcome = await self.retry_turn(openid, kept["text"], metadata)
                if isinstance(outcome, Failed):
                    if kept.get("in_flight"):  # kept from now on as a failed turn
                        await self.call(self.store.keep_failed, key, {k: v for k, v in kept.items() if k != "in_flight"})
                    break  # still down: try again next round
                await self.call(self.store.drop_failed, key)
                if outcome.handoff:  # taken up with the citizen's next message
                    await self._hand_over(openid)
                await self.send_texts(openid, outcome.texts)
            finally:
                holding.cancel()
                await self.call(self.store.unlease, key)
        return True
