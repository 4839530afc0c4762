"""The WeChat delivery rules (channels/wechat_delivery.py) on virtual time: retries, the deadline,
passive replies or customer-service messages, hand-off to WeChat's human service, failed turns.
No test here waits in real time; the store is the real SQLite store."""
from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from channels.wechat_delivery import APOLOGY, HOLD_S, Answer, Delivery, Failed, Outcome
from channels.wechat_store import Reply, SqliteClaims, message_key

ACCOUNT = "wx00000000000000a1"


class VirtualTime:
    """A clock that moves only when every task is waiting: then it jumps to the next wake-up."""

    def __init__(self) -> None:
        self.now = 1000.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def clock(self) -> float:
        return self.now

    def wall(self) -> float:
        return 1_800_000_000.0 + self.now

    async def sleep(self, seconds: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + max(0.0, seconds), next(self._seq), future))
        await future

    async def wait(self, task: asyncio.Future[Any], timeout: float) -> None:
        timer = asyncio.ensure_future(self.sleep(timeout))
        await asyncio.wait({task, timer}, return_when=asyncio.FIRST_COMPLETED)
        timer.cancel()

    async def run(self, coro: Awaitable[Any]) -> Any:
        task = asyncio.ensure_future(coro)
        while not task.done():
            for _ in range(20):  # let every ready task run until all wait
                await asyncio.sleep(0)
            if task.done():
                break
            while self._sleepers and self._sleepers[0][2].cancelled():
                heapq.heappop(self._sleepers)
            if not self._sleepers:
                continue
            at, _, future = heapq.heappop(self._sleepers)
            self.now = max(self.now, at)
            future.set_result(None)
        return task.result()


async def direct(fn: Callable[..., Any], *args: Any) -> Any:
    return fn(*args)


class Harness:
    def __init__(self, tmp_path: Path, passive: bool = True, kf_account: str = "") -> None:
        self.time = VirtualTime()
        self.store = SqliteClaims(str(tmp_path / "claims.db"), clock=self.time.wall)
        self.sent: list[tuple[str, list[str], float]] = []
        self.turns: list[str] = []
        self.delivery = Delivery(self.store, ACCOUNT, "wechat" if passive else "miniprogram", self.send,
                                 passive=passive, kf_account=kf_account, human_s=1800, retry_s=60,
                                 clock=self.time.clock, wall=self.time.wall, sleep=self.time.sleep,
                                 wait=self.time.wait, offload=direct)

    async def send(self, openid: str, texts: list[str]) -> bool:
        self.sent.append((openid, texts, self.time.now))
        return True

    def turn(self, text: str, seconds: float, texts: list[str] | None = None, handoff: bool = False,
             fail: bool = False) -> Callable[[], Awaitable[Outcome | Failed]]:
        async def run() -> Outcome | Failed:
            self.turns.append(text)
            await self.time.sleep(seconds)
            if fail:
                return Failed(text, {"channel": "wechat"})
            return Outcome(texts if texts is not None else [f"答：{text}"], handoff)
        return run

    def key(self, openid: str, msg_id: str) -> str:
        return message_key(ACCOUNT, {"FromUserName": openid, "MsgId": msg_id})

    def deliver(self, openid: str, msg_id: str, turn: Any = None, **kw: Any) -> Awaitable[Answer]:
        return self.delivery.deliver(self.key(openid, msg_id), openid, self.time.now, turn=turn, **kw)

    def play(self, coro: Awaitable[Any]) -> Any:
        async def with_settle() -> Any:
            result = await coro
            return result

        return asyncio.run(self.time.run(with_settle()))


def test_a_quick_turn_is_a_passive_reply(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    answer = h.play(h.deliver("o1", "1", h.turn("你好", 1.2)))
    assert answer == Answer("reply", ["答：你好"], first=True) and h.time.now == pytest.approx(1001.2) and h.sent == []


def test_a_slow_turn_gets_success_at_the_deadline_then_one_customer_service_message(tmp_path: Path) -> None:
    h = Harness(tmp_path)

    async def scenario() -> list[Answer]:
        first = await h.deliver("o1", "1", h.turn("查进度", 7))
        assert h.time.now == pytest.approx(1004.0)  # success at the 4 s deadline
        answers = [first]
        for _ in range(3):  # WeChat's retries at 5, 10 and 15 s: no second turn
            await h.time.sleep(5 - (h.time.now - 1000) % 5)
            answers.append(await h.deliver("o1", "1", h.turn("查进度", 7)))
        await h.delivery.settle()
        return answers

    answers = h.play(scenario())
    assert [a.kind for a in answers] == ["success"] * 4 and h.turns == ["查进度"]
    assert [(o, t) for o, t, _ in h.sent] == [("o1", ["答：查进度"])] and h.sent[0][2] == pytest.approx(1007.0)


def test_a_retry_during_the_turn_waits_for_the_same_reply(tmp_path: Path) -> None:
    h = Harness(tmp_path)

    async def scenario() -> tuple[Answer, Answer]:
        first = asyncio.ensure_future(h.deliver("o1", "1", h.turn("查工单", 2)))
        await h.time.sleep(1)
        second = await h.deliver("o1", "1", h.turn("查工单", 2))
        return await first, second

    first, second = h.play(scenario())
    assert first == Answer("reply", ["答：查工单"], first=True) and h.turns == ["查工单"]
    assert second == Answer("reply", ["答：查工单"])  # the same texts; not the first answer (nothing sent again beside it)


def test_the_same_msgid_from_another_citizen_is_another_message(tmp_path: Path) -> None:
    h = Harness(tmp_path)

    async def scenario() -> tuple[Answer, Answer]:
        return (await h.deliver("o1", "42", h.turn("我的身份证号是…", 1)),
                await h.deliver("o2", "42", h.turn("查工单", 1)))

    mine, theirs = h.play(scenario())
    assert mine.texts == ["答：我的身份证号是…"] and theirs.texts == ["答：查工单"]
    assert h.turns == ["我的身份证号是…", "查工单"]
    other = SqliteClaims(str(tmp_path / "claims.db"))
    assert other.claim(message_key("wx-mini", {"FromUserName": "o1", "MsgId": "42"})).state == "new"


def test_the_mini_program_sends_every_text_as_a_customer_service_message(tmp_path: Path) -> None:
    h = Harness(tmp_path, passive=False)

    async def scenario() -> tuple[Answer, Answer]:
        answered = await h.deliver("m1", "1", h.turn("办护照要多少钱", 1))
        unsupported = await h.deliver("m1", "2", immediate=["目前我能看懂文字和语音消息。"])
        await h.delivery.settle()
        return answered, unsupported

    answered, unsupported = h.play(scenario())
    assert answered.kind == unsupported.kind == "success"
    assert [t for _, t, _ in h.sent] == [["答：办护照要多少钱"], ["目前我能看懂文字和语音消息。"]]
    h.sent.clear()
    assert h.play(h.deliver("m1", "2", immediate=["目前我能看懂文字和语音消息。"])).kind == "success"
    assert h.sent == []  # WeChat's retry of the image: not a second message


@pytest.mark.parametrize("passive", [True, False])
def test_a_handoff_transfers_and_the_bot_stays_quiet_until_handed_back(tmp_path: Path, passive: bool) -> None:
    h = Harness(tmp_path, passive=passive, kf_account="kf2001@heze")
    said = ["好的，正在为您转人工。"]

    async def scenario() -> list[Answer]:
        answers = [await h.deliver("o1", "1", h.turn("转人工", 1, said, handoff=True))]
        await h.delivery.settle()
        answers.append(await h.deliver("o1", "2", h.turn("你好", 1)))  # with the human service: no turn
        answers.append(await h.deliver("o1", "3", turn=h.turn("/greet", 1), transferable=False))  # an event
        answers.append(await h.deliver("o1", "2", h.turn("你好", 1)))  # WeChat's retry of the transferred message
        return answers

    answers = h.play(scenario())
    assert [a.kind for a in answers] == ["transfer", "transfer", "success", "transfer"]
    assert {a.kf_account for a in answers if a.kind == "transfer"} == {"kf2001@heze"}
    assert h.turns == ["转人工"] and [t for _, t, _ in h.sent] == [said]  # the bot's words as a message
    (human,) = h.store.humans()
    assert (human.openid, human.channel) == ("o1", h.delivery.channel)
    assert h.store.hand_back(ACCOUNT, "o1") and h.store.humans() == []
    assert h.play(h.deliver("o1", "4", h.turn("查工单", 1))) .kind != "transfer" and h.turns[-1] == "查工单"


def test_the_human_service_lapses_after_a_quiet_half_hour(tmp_path: Path) -> None:
    h = Harness(tmp_path)

    async def scenario() -> list[str]:
        kinds = [(await h.deliver("o1", "1", h.turn("转人工", 1, ["正在为您转人工"], handoff=True))).kind]
        await h.time.sleep(1700)
        kinds.append((await h.deliver("o1", "2", h.turn("在吗", 1))).kind)  # still with the human: 30 min from now
        await h.time.sleep(1700)
        kinds.append((await h.deliver("o1", "3", h.turn("在吗", 1))).kind)
        await h.time.sleep(1801)
        kinds.append((await h.deliver("o1", "4", h.turn("查工单", 1))).kind)  # half an hour of silence: the bot's again
        return kinds

    assert h.play(scenario()) == ["transfer", "transfer", "transfer", "reply"]


def test_a_handoff_after_the_deadline_transfers_the_next_message(tmp_path: Path) -> None:
    h = Harness(tmp_path)

    async def scenario() -> list[str]:
        kinds = [(await h.deliver("o1", "1", h.turn("转人工", 6, ["正在为您转人工"], handoff=True))).kind]
        await h.delivery.settle()
        kinds.append((await h.deliver("o1", "2", h.turn("人呢", 1))).kind)
        return kinds

    assert h.play(scenario()) == ["success", "transfer"]
    assert [t for _, t, _ in h.sent] == [["正在为您转人工"]]


def test_a_failed_turn_gets_the_apology_and_is_answered_once_the_services_are_back(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    down = [True]

    async def retry(openid: str, text: str, metadata: dict[str, Any]) -> Outcome | Failed:
        h.turns.append(f"retry:{text}")
        return Failed(text, metadata) if down[0] else Outcome([f"答：{text}"])

    h.delivery.retry_turn = retry

    async def scenario() -> Answer:
        answer = await h.deliver("o1", "1", h.turn("转人工", 0.5, fail=True))
        await h.time.sleep(61)  # one round while still down
        assert h.sent == [] and h.turns == ["转人工", "retry:转人工"]
        down[0] = False
        await h.time.sleep(60)
        await h.delivery.settle()
        return answer

    assert h.play(scenario()) == Answer("reply", [APOLOGY], first=True)
    assert [t for _, t, _ in h.sent] == [["答：转人工"]] and h.store.failed(ACCOUNT) == []


def test_a_replay_gets_the_stored_answer_and_an_unknown_one_none(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.play(h.deliver("o1", "1", h.turn("查工单", 1)))
    assert h.play(h.delivery.replayed(h.key("o1", "1"), "o1", h.time.now)) == Answer("reply", ["答：查工单"])
    assert h.play(h.delivery.replayed(h.key("o1", "9"), "o1", h.time.now)) is None
    assert h.turns == ["查工单"]


def test_a_turn_predicted_late_gets_success_at_once(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.delivery.pace.expected_wait = lambda: 5.0  # type: ignore[method-assign]

    async def scenario() -> Answer:
        answer = await h.deliver("o1", "1", h.turn("查工单", 2))
        assert h.time.now == pytest.approx(1000.0)  # not after the deadline: now
        await h.delivery.settle()
        return answer

    assert h.play(scenario()).kind == "success" and [t for _, t, _ in h.sent] == [["答：查工单"]]


def test_messages_kept_before_a_restart_are_answered_by_one_worker_of_several(tmp_path: Path) -> None:
    first = Harness(tmp_path)
    first.play(first.deliver("o1", "1", first.turn("查工单", 0.5, fail=True)))  # kept; then the server stops
    workers = [Harness(tmp_path), Harness(tmp_path)]  # after the restart: two workers on the same store
    answered: list[str] = []
    clock = workers[0].time

    for worker in workers:
        worker.time = clock  # one clock for both
        worker.delivery.sleep, worker.delivery.wait = clock.sleep, clock.wait
        worker.delivery.clock, worker.delivery.wall = clock.clock, clock.wall

        async def retry(openid: str, text: str, metadata: dict[str, Any], w: Harness = worker) -> Outcome | Failed:
            answered.append(text)
            await clock.sleep(40)  # a slow turn: the other worker's round (at 90 s) comes while it runs
            return Outcome([f"答：{text}"])

        worker.delivery.retry_turn = retry

    async def scenario() -> None:
        workers[0].delivery.start_retrying()
        await clock.sleep(30)
        workers[1].delivery.start_retrying()  # its rounds fall 30 s later, while the first may still run
        await clock.sleep(200)
        for worker in workers:
            await worker.delivery.settle()

    asyncio.run(clock.run(scenario()))
    assert answered == ["查工单"]  # once, though two workers and many rounds
    assert [t for w in workers for _, t, _ in w.sent] == [["答：查工单"]]


def test_an_error_in_the_turn_or_the_store_is_the_apology_not_silence(tmp_path: Path) -> None:
    h = Harness(tmp_path)

    async def broken() -> Outcome | Failed:
        raise RuntimeError("the store went away")

    assert h.play(h.deliver("o1", "1", broken)) == Answer("reply", [APOLOGY], first=True)

    async def failing_send(openid: str, texts: list[str]) -> bool:
        raise RuntimeError("network")

    h.delivery.send = failing_send
    h.delivery.passive = False
    assert h.play(h.deliver("o1", "2", h.turn("你好", 1))).kind == "success"  # the send failed, logged, not raised


def test_kept_messages_of_a_citizen_with_a_human_wait(tmp_path: Path) -> None:
    from channels.wechat_store import Human
    h = Harness(tmp_path)
    h.play(h.deliver("o1", "1", h.turn("查工单", 0.5, fail=True)))
    h.store.hand_to_human(Human(ACCOUNT, "o1", "wechat", "", h.time.wall(), h.time.wall() + 10_000))
    ran: list[str] = []

    async def retry(openid: str, text: str, metadata: dict[str, Any]) -> Outcome | Failed:
        ran.append(text)
        return Outcome(["答"])

    h.delivery.retry_turn = retry

    async def scenario() -> None:
        h.delivery.start_retrying()
        await h.time.sleep(130)

    h.play(scenario())
    assert ran == [] and len(h.store.failed(ACCOUNT)) == 1  # not answered over the agent, still kept


def test_a_message_held_by_a_worker_that_died_is_answered_once_by_another(tmp_path: Path) -> None:
    """A Rasa replica dies mid-turn: its hold on the message lapses and another replica's retry round
    takes the message over, with the message id the channel looks up in the tracker (answered once)."""
    dying, other = Harness(tmp_path), Harness(tmp_path)
    clock = dying.time
    other.time = clock
    other.delivery.sleep, other.delivery.wait = clock.sleep, clock.wait
    other.delivery.clock, other.delivery.wall = clock.clock, clock.wall
    other.store._clock = clock.wall  # one store clock too: the leases' ages
    key = dying.key("o1", "1")
    forever: asyncio.Future[None] = asyncio.Future  # replaced inside the loop

    async def hang(_: float = 0) -> None:
        await forever

    def turn_that_dies() -> Callable[[], Awaitable[Outcome | Failed]]:
        async def run() -> Outcome | Failed:  # the crash, mid-turn
            dying.delivery.sleep = hang  # dead: no renewal, no reply, ever
            await hang()
            raise AssertionError("unreachable")
        return run

    taken_over: list[tuple[str, dict[str, Any]]] = []

    async def retry(openid: str, text: str, metadata: dict[str, Any]) -> Outcome | Failed:
        taken_over.append((text, dict(metadata)))
        return Outcome([f"答：{text}"])

    other.delivery.retry_turn = retry

    async def scenario() -> list[Answer]:
        nonlocal forever
        forever = asyncio.get_running_loop().create_future()
        other.delivery.start_retrying(forever=True)
        answers = [await dying.deliver("o1", "1", turn_that_dies(), keep={
            "sender": "o1", "text": "查进度", "metadata": {"channel": "wechat"}, "message_id": "wx-m1"})]
        for _ in range(3):  # WeChat's retries reach the other replica: no second turn there
            await clock.sleep(5 - (clock.now - 1000) % 5)
            answers.append(await other.deliver("o1", "1", other.turn("查进度", 1)))
        await clock.sleep(200)  # several of the other replica's rounds
        other.delivery._forever.cancel()  # type: ignore[union-attr]
        await other.delivery.settle()
        return answers

    answers = asyncio.run(clock.run(scenario()))
    assert [a.kind for a in answers] == ["success"] * 4 and other.turns == []
    assert len(taken_over) == 1 and taken_over[0][1]["message_id"] == "wx-m1"
    assert [(o, t) for o, t, _ in other.sent] == [("o1", ["答：查进度"])]
    assert other.store.failed(ACCOUNT) == []


def test_a_citizens_next_message_waits_for_the_one_a_dead_worker_held(tmp_path: Path) -> None:
    """The worker answering "查工单" dies; WeChat got success, and the citizen's next message (the
    ticket number) reaches another worker. It waits until "查工单" is taken over and answered, then
    runs: the tracker reads 查工单, 10000001 (run the other way, the bot would ask for the number again)."""
    dying, other = Harness(tmp_path), Harness(tmp_path)
    clock = dying.time
    other.time = clock
    other.delivery.sleep, other.delivery.wait = clock.sleep, clock.wait
    other.delivery.clock, other.delivery.wall = clock.clock, clock.wall
    other.store._clock = clock.wall
    forever: asyncio.Future[None] = asyncio.Future  # replaced inside the loop
    ran: list[tuple[str, float]] = []

    async def hang(_: float = 0) -> None:
        await forever

    async def dies() -> Outcome | Failed:
        dying.delivery.sleep = hang  # dead: no renewal, no reply, ever
        await hang()
        raise AssertionError("unreachable")

    async def retry(openid: str, text: str, metadata: dict[str, Any]) -> Outcome | Failed:
        ran.append((text, clock.now))
        return Outcome([f"答：{text}"])
    other.delivery.retry_turn = retry

    def ticket() -> Callable[[], Awaitable[Outcome | Failed]]:
        async def run() -> Outcome | Failed:
            ran.append(("10000001", clock.now))
            return Outcome(["工单10000001：正在处理。"])
        return run

    def kept(text: str, n: int) -> dict[str, Any]:
        return {"sender": "o1", "text": text, "metadata": {"channel": "wechat"}, "message_id": f"wx-o{n}"}

    async def scenario() -> list[Answer]:
        nonlocal forever
        forever = asyncio.get_running_loop().create_future()
        other.delivery.start_retrying(forever=True)
        answers = [await dying.deliver("o1", "1", dies, keep=kept("查工单", 1))]
        await clock.sleep(1)
        answers.append(await other.deliver("o1", "2", ticket(), keep=kept("10000001", 2)))
        await clock.sleep(200)
        other.delivery._forever.cancel()  # type: ignore[union-attr]
        await other.delivery.settle()
        return answers

    answers = asyncio.run(clock.run(scenario()))
    assert [a.kind for a in answers] == ["success", "success"]
    assert [text for text, _ in ran] == ["查工单", "10000001"]
    assert ran[0][1] >= 1000 + HOLD_S  # taken over once the dead worker's hold lapsed, not before
    assert [t for _, t, _ in other.sent] == [["答：查工单"], ["工单10000001：正在处理。"]]
    assert other.store.failed(ACCOUNT) == [] and other.store.first_in_flight(f"{ACCOUNT}/o1") is None


def test_a_message_that_waited_for_a_hand_off_goes_to_the_human_not_the_bot(tmp_path: Path) -> None:
    """"转人工" is still being answered when the citizen writes again: the second message waits its
    turn, and once the first handed the citizen to a person it is transferred, not answered by the bot."""
    h = Harness(tmp_path, kf_account="kf2001@heze")

    def kept(text: str, n: int) -> dict[str, Any]:
        return {"sender": "o1", "text": text, "metadata": {"channel": "wechat"}, "message_id": f"wx-h{n}"}

    async def scenario() -> list[Answer]:
        first = asyncio.ensure_future(h.deliver("o1", "1", h.turn("转人工", 6, texts=["正在为您转人工。"], handoff=True),
                                                keep=kept("转人工", 1)))
        await h.time.sleep(1)
        second = await h.deliver("o1", "2", h.turn("我的工单呢", 1), keep=kept("我的工单呢", 2))
        answers = [await first, second]
        await h.time.sleep(30)  # both replies go out as customer-service messages meanwhile
        await h.delivery.settle()
        return answers

    first, second = h.play(scenario())
    assert h.turns == ["转人工"]  # the second message never became a turn
    assert first.kind == "success" and second.kind == "success"  # both past WeChat's deadline
    assert [t for _, t, _ in h.sent] == [["正在为您转人工。"]]  # nothing from the bot after the hand-off
    assert h.store.with_human(ACCOUNT, "o1") is not None and h.store.failed(ACCOUNT) == []


def test_a_round_leaves_a_citizens_later_message_while_an_earlier_one_is_held(tmp_path: Path) -> None:
    """Two messages of one citizen kept by a worker that died; the first is still held by a live
    worker: the round runs neither out of turn, and both once the first is let go, in order."""
    h = Harness(tmp_path)
    retried = retries_of(h)
    first, second = h.key("o1", "1"), h.key("o1", "2")
    for key, text in ((first, "查工单"), (second, "10000001")):
        h.store.claim(key, 0, {"sender": "o1", "text": text, "metadata": {}, "message_id": "wx-" + text,
                               "in_flight": True})
    h.store.lease(first, HOLD_S)
    alive = True

    async def live_worker() -> None:  # still answers the first, renewing its hold
        while alive:
            h.store.renew(first)
            await h.time.sleep(HOLD_S / 3)

    async def scenario() -> None:
        nonlocal alive
        worker = asyncio.ensure_future(live_worker())
        h.delivery.start_retrying(forever=True)
        await h.time.sleep(130)  # two rounds
        assert retried == []
        alive = False  # it died after all: its hold lapses
        await worker
        await rounds_for(h, 70)

    h.play(scenario())
    assert retried == ["查工单", "10000001"] and h.store.failed(ACCOUNT) == []


def test_a_message_answered_is_let_go_and_never_taken_over(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    retried = retries_of(h)

    async def scenario() -> Answer:
        h.delivery.start_retrying(forever=True)
        answer = await h.deliver("o1", "1", h.turn("查进度", 100), keep={  # slow: a round (60 s) comes while held
            "sender": "o1", "text": "查进度", "metadata": {}, "message_id": "wx-m2"})
        await rounds_for(h, 200)
        return answer

    assert h.play(scenario()).kind == "success"
    assert retried == [] and [t for _, t, _ in h.sent] == [["答：查进度"]] and h.store.failed(ACCOUNT) == []


def test_a_message_whose_reply_was_stored_before_its_worker_died_is_not_sent_again(tmp_path: Path) -> None:
    """The worker stored the passive reply (WeChat's retries get it) and died before it forgot the
    message: another worker's round must not send the reply a second time."""
    h = Harness(tmp_path)
    key = h.key("o1", "1")
    h.store.claim(key, 1, {"sender": "o1", "text": "查工单", "metadata": {}, "message_id": "wx-m3", "in_flight": True})
    h.store.finish(key, Reply(["答：查工单"]))  # stored, not forgotten: the worker stopped in between
    retried = retries_of(h)

    async def scenario() -> None:
        h.delivery.start_retrying(forever=True)
        await rounds_for(h, 200)

    h.play(scenario())
    assert retried == [] and h.sent == [] and h.store.failed(ACCOUNT) == []


def retries_of(h: Harness) -> list[str]:
    """The texts the worker's retry rounds run again (each answered "again")."""
    retried: list[str] = []

    async def retry(openid: str, text: str, metadata: dict[str, Any]) -> Outcome | Failed:
        retried.append(text)
        return Outcome(["again"])

    h.delivery.retry_turn = retry
    return retried


async def rounds_for(h: Harness, seconds: float) -> None:
    """Let the worker's endless retry rounds run for ``seconds`` of virtual time, then stop them."""
    await h.time.sleep(seconds)
    h.delivery._forever.cancel()  # type: ignore[union-attr]
    await h.delivery.settle()
