"""rasa_runtime.patches: the version guard, and each replacement behaving as the stock function."""
from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from aiohttp import web
from jsonschema import ValidationError

import rasa
from rasa.core.actions.action import RemoteAction
from rasa.engine.exceptions import GraphRunError
from rasa.engine.runner.dask import DaskGraphRunner
from rasa.shared.core.events import Event
from rasa.shared.utils.common import all_subclasses
from rasa.utils.endpoints import ClientResponseError, EndpointConfig

from rasa_runtime import patches
from tests.rasa_env.conftest import ROOT

patches.install()


def test_the_pinned_rasa_is_the_installed_one_and_the_locked_one() -> None:
    assert rasa.__version__ == patches.PINNED_RASA
    locked = re.search(r"^rasa==(\S+)$", (ROOT / "requirements" / "rasa.lock").read_text(), re.M)
    assert locked and locked.group(1) == patches.PINNED_RASA


def test_every_replaced_function_is_the_one_the_replacements_were_written_against() -> None:
    chosen = patches.check()
    assert {(r.owner.__name__, r.name) for r in chosen} == {
        ("RemoteAction", "_validate_action_result"), ("EndpointConfig", "request"),
        ("Event", "resolve_by_type"), ("DaskGraphRunner", "run"),
        ("FailSafeTrackerStore", "on_tracker_store_error"), ("FailSafeTrackerStore", "on_tracker_store_retrieve_error")}
    for replacement in chosen:  # installed: the class now holds the replacement, not the stock function
        assert inspect_static(replacement.owner, replacement.name) is not replacement.stock()


def inspect_static(owner: Any, name: str) -> Any:
    import inspect

    return inspect.getattr_static(owner, name)


def test_another_rasa_version_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rasa, "__version__", "3.6.22")
    with pytest.raises(patches.IncompatibleRasa, match="3.6.21"):
        patches.check()
    with pytest.raises(patches.IncompatibleRasa):
        patches.install()


def test_a_changed_stock_function_is_refused() -> None:
    class Upgraded:
        def request(self) -> None:  # what a later Rasa might ship under the same name
            return None

    real = next(r for r in patches.replacements() if r.name == "request")
    changed = patches.Replacement(Upgraded, "request", real.original_sha256, real.make)
    with pytest.raises(patches.IncompatibleRasa, match="Upgraded.request"):
        changed.check()


def test_install_twice_changes_nothing() -> None:
    before = inspect_static(RemoteAction, "_validate_action_result")
    patches.install()
    assert inspect_static(RemoteAction, "_validate_action_result") is before


# --- action response validation -------------------------------------------------------------------

VALID = [
    {"events": [], "responses": []},
    {},
    {"events": [{"event": "slot", "name": "rating", "value": "5", "timestamp": None}],
     "responses": [{"text": "谢谢您的评价。", "buttons": [], "elements": [], "custom": {}, "template": None,
                    "response": None, "image": None, "attachment": None}]},
    {"events": [{"event": "followup", "name": "action_answer_guide"}, {"event": "active_loop", "name": None},
                {"event": "reset_slots"}, {"event": "bot", "text": "好的。", "data": {}},
                {"event": "action_execution_rejected", "name": "progress_form"}], "responses": []},
    {"events": [{"event": "slot", "name": "bill_amount", "value": 12.5}, {"event": "restart"}]},
    {"events": [{"event": "followup"}]},  # stock's schema does not require the name
]
INVALID = [
    {"events": {}},
    {"events": "slot"},
    {"events": [{"name": "rating", "value": "5"}]},
    {"events": [{"event": "no_such_event"}]},
    {"events": [{"event": "slot", "value": "5"}]},
    {"events": [{"event": "slot", "name": 5, "value": "5"}]},
    {"responses": "不是列表"},
    # jsonschema_rs reads the schema's \w as ASCII: it alone would accept this (a helper's review found it)
    {"events": [{"event": "user", "text": "x",
                 "parse_data": {"response_selector": {"all_retrieval_intents": {}, "好": 5}}}]},
    {"responses": ["不是对象"]},
    [],
    "events",
]
RESPONSES = VALID + INVALID


def outcome(validate: Any, response: Any) -> tuple[bool, str]:
    try:
        return validate(RemoteAction("action_x", EndpointConfig("http://127.0.0.1:1")), response), ""
    except ValidationError as e:
        return False, e.message


@pytest.mark.parametrize("response", RESPONSES, ids=range(len(RESPONSES)))
def test_action_responses_are_accepted_and_refused_as_stock_does(response: Any) -> None:
    stock = patches.stock(RemoteAction, "_validate_action_result")
    ours = RemoteAction._validate_action_result
    assert ours is not stock
    assert outcome(ours, response) == outcome(stock, response)


def test_valid_responses_pass_and_invalid_ones_are_still_refused() -> None:
    assert all(outcome(RemoteAction._validate_action_result, r) == (True, "") for r in VALID)
    for response in INVALID:
        valid, message = outcome(RemoteAction._validate_action_result, response)
        assert not valid and "Failed to validate Action server response" in message


def _schema_words(schema: Any, consts: set, names: set) -> None:
    """Every ``const`` (event type) and property name in the action response schema."""
    if isinstance(schema, dict):
        if isinstance(schema.get("const"), str):
            consts.add(schema["const"])
        names.update((schema.get("properties") or {}).keys())
        for value in schema.values():
            _schema_words(value, consts, names)
    elif isinstance(schema, list):
        for value in schema:
            _schema_words(value, consts, names)


def generated_responses(n: int, seed: int = 0) -> list[Any]:
    """Action server responses built at random from the schema's own words: event types (and some that
    are not), its field names with values of every JSON type, fields left out, wrong containers."""
    import random
    consts: set = set()
    names: set = set()
    _schema_words(RemoteAction.action_response_format_spec(), consts, names)
    rng = random.Random(seed)
    types, fields = sorted(consts) + ["no_such_event", ""], sorted(names)

    def value(depth: int = 0) -> Any:
        kinds = [lambda: None, lambda: True, lambda: rng.randint(-3, 10**6), lambda: rng.random() * 100,
                 lambda: rng.choice(["", "好的", "5", "/rate"]), lambda: rng.choice(fields),
                 lambda: [value(depth + 1) for _ in range(rng.randrange(3))],
                 lambda: {rng.choice(fields): value(depth + 1) for _ in range(rng.randrange(3))}, lambda: {}]
        return kinds[rng.randrange(len(kinds) if depth < 2 else 6)]()

    def event() -> Any:
        e = {rng.choice(fields): value() for _ in range(rng.randrange(4))}
        if rng.random() < 0.9:
            e["event"] = rng.choice(types)
        if rng.random() < 0.5:
            e["name"] = rng.choice(["rating", "progress_form", None, 5])
        if rng.random() < 0.3:
            e["timestamp"] = rng.choice([None, 1_700_000_000.5, "now"])
        return e if rng.random() < 0.97 else rng.choice(["slot", [], None])

    def response() -> Any:
        r: dict = {}
        if rng.random() < 0.9:
            r["events"] = [event() for _ in range(rng.randrange(5))] if rng.random() < 0.95 else value()
        if rng.random() < 0.7:
            r["responses"] = [{rng.choice(fields): value() for _ in range(rng.randrange(4))}
                              for _ in range(rng.randrange(3))] if rng.random() < 0.95 else value()
        return r if rng.random() < 0.98 else rng.choice([[], "events", None])

    return [response() for _ in range(n)]


def test_the_rust_check_is_in_use_and_agrees_with_jsonschema_on_generated_responses() -> None:
    """The quick check may only ever say "valid" where jsonschema does (otherwise an invalid response
    would pass); held on 2,000 responses generated from the schema's words, both kinds well represented."""
    from jsonschema.validators import validator_for
    schema = RemoteAction.action_response_format_spec()
    draft = validator_for(schema)
    quick = patches._rust_validator(draft.__name__, schema)
    assert quick is not None
    slow = draft(schema)
    responses = generated_responses(2000)
    verdicts = [(quick(r), slow.is_valid(r)) for r in responses]
    disagree = [r for r, (q, s) in zip(responses, verdicts) if q != s]
    assert not disagree, disagree[:3]
    valid = sum(s for _, s in verdicts)
    assert 200 < valid < 1800, valid  # neither kind is rare: the agreement means something
    for response in responses[:100]:  # and the replacement answers as stock on them, message included
        assert outcome(RemoteAction._validate_action_result, response) == \
            outcome(patches.stock(RemoteAction, "_validate_action_result"), response)


# --- event classes by name -----------------------------------------------------------------------

def test_every_event_type_resolves_to_the_class_stock_finds() -> None:
    stock = patches.stock(Event, "resolve_by_type").__func__
    names = {cls.type_name for cls in all_subclasses(Event)}
    assert len(names) > 20
    for name in names:
        assert Event.resolve_by_type(name) is stock(name)
    assert Event.resolve_by_type("topic") is None and stock("topic") is None
    assert Event.resolve_by_type("nonsense", default=Event) is Event
    with pytest.raises(ValueError, match="Unknown event name 'nonsense'"):
        Event.resolve_by_type("nonsense")


def test_an_event_class_defined_later_is_found() -> None:
    from rasa.shared.core.events import SlotSet

    class LateEvent(SlotSet):
        type_name = "rasa_runtime_test_late"

    assert Event.resolve_by_type("rasa_runtime_test_late") is LateEvent


def test_events_round_trip_through_the_table() -> None:
    from rasa.shared.core.events import ActionExecuted, BotUttered, SlotSet, UserUttered, deserialise_events

    events = [UserUttered("交电费", {"name": "pay_bill", "confidence": 0.99}, [], timestamp=1.0),
              ActionExecuted("bill_form", timestamp=2.0), SlotSet("bill_type", "electricity", timestamp=3.0),
              BotUttered("请说户号。", {"buttons": None}, timestamp=4.0)]
    assert deserialise_events([e.as_dict() for e in events]) == events


# --- the graph runner ----------------------------------------------------------------------------

class Node:
    """A stand-in graph node: returns (name, inputs seen), as GraphNode does."""

    def __init__(self, name: str, calls: list[str]) -> None:
        self.name, self.calls = name, calls

    def __call__(self, *inputs: Any) -> tuple[str, Any]:
        self.calls.append(self.name)
        return self.name, [i if isinstance(i, str) else i[1] for i in inputs]


def runner(calls: list[str]) -> DaskGraphRunner:
    from rasa.engine.graph import GraphSchema, SchemaNode

    def node(needs: dict[str, str], target: bool = False) -> SchemaNode:
        return SchemaNode(needs=needs, uses=object, constructor_name="create", fn="run", config={},
                          is_target=target)

    schema = GraphSchema({"a": node({"x": "__in__"}), "b": node({"x": "a"}), "c": node({"x": "a", "y": "b"}, True),
                          "d": node({}), "e": node({"x": "__missing__"})})
    graph = DaskGraphRunner.__new__(DaskGraphRunner)
    graph._graph_schema = schema
    graph._instantiated_nodes = {name: Node(name, calls) for name in schema.nodes}
    graph._execution_context = None
    return graph


@pytest.mark.parametrize("targets", [["c"], ["b"], ["c", "d"], None, ["e"]])
def test_the_graph_runs_each_needed_node_once_with_the_results_dask_gives(targets: Any) -> None:
    stock = patches.stock(DaskGraphRunner, "run")
    ours_calls: list[str] = []
    stock_calls: list[str] = []
    ours = runner(ours_calls).run(inputs={"__in__": "消息"}, targets=targets)
    theirs = stock(runner(stock_calls), inputs={"__in__": "消息"}, targets=targets)
    assert ours == theirs
    assert sorted(ours_calls) == sorted(stock_calls) and len(set(ours_calls)) == len(ours_calls)


def test_an_input_named_like_a_node_is_refused_as_stock_does() -> None:
    with pytest.raises(GraphRunError, match="clashes with a node name"):
        runner([]).run(inputs={"__in__": "a"}, targets=["c"])


# --- the action endpoint's HTTP session ---------------------------------------------------------

async def _serve() -> tuple[web.AppRunner, str, list[Any]]:
    peers: list[Any] = []

    async def ok(request: web.Request) -> web.Response:
        peers.append(request.transport.get_extra_info("peername"))
        return web.json_response({"got": await request.json(), "token": request.query.get("token")})

    async def bad(request: web.Request) -> web.Response:
        return web.json_response({"action_name": "x", "error": "refused"}, status=400)

    async def text(request: web.Request) -> web.Response:
        return web.Response(text="plain")

    app = web.Application()
    app.add_routes([web.post("/webhook", ok), web.post("/bad", bad), web.post("/text", text)])
    server = web.AppRunner(app)
    await server.setup()
    site = web.TCPSite(server, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return server, f"http://127.0.0.1:{port}", peers


def test_action_calls_share_one_session_and_answer_as_stock() -> None:
    async def scenario() -> None:
        server, base, peers = await _serve()
        try:
            endpoint = EndpointConfig(f"{base}/webhook", token="secret")
            first = await endpoint.request(json={"n": 1}, method="post")
            second = await endpoint.request(json={"n": 2}, method="post")
            assert first == {"got": {"n": 1}, "token": "secret"} and second["got"] == {"n": 2}
            assert len(patches._sessions) == 1  # one session for the endpoint, not one per call
            assert len(peers) == 2 and peers[0] != peers[1]  # each call on its own connection, as stock
            with pytest.raises(ClientResponseError) as refused:
                await EndpointConfig(f"{base}/bad").request(json={}, method="post")
            assert refused.value.status == 400 and b"refused" in refused.value.text
            assert await EndpointConfig(f"{base}/text").request(json={}, method="post") is None
            await patches.close_sessions()
            assert not patches._sessions
        finally:
            await server.cleanup()

    asyncio.run(scenario())


def test_a_tracker_store_that_fails_fails_the_turn_instead_of_falling_back_to_memory() -> None:
    """Stock answers from an in-memory store when the database is away (a stranger's answer, a turn
    kept nowhere); a store with ``fail_safe = False`` (HezeTrackerStore) has its error raised."""
    import asyncio

    from rasa.core.tracker_store import FailSafeTrackerStore, InMemoryTrackerStore
    from rasa.shared.core.domain import Domain
    from rasa.shared.core.trackers import DialogueStateTracker

    class Down(InMemoryTrackerStore):
        async def retrieve(self, sender_id: str) -> Any:
            raise ConnectionError("database unreachable")

        async def save(self, tracker: Any) -> None:
            raise ConnectionError("database unreachable")

    class DownNotFailSafe(Down):
        fail_safe = False

    tracker = DialogueStateTracker("s1", [])
    stock_like = FailSafeTrackerStore(Down(Domain.empty()))
    assert asyncio.run(stock_like.retrieve("s1")) is None  # stock: carries on as if new
    asyncio.run(stock_like.save(tracker))  # stock: kept in memory only
    assert asyncio.run(stock_like.fallback_tracker_store.retrieve("s1")) is not None
    ours = FailSafeTrackerStore(DownNotFailSafe(Domain.empty()))
    with pytest.raises(ConnectionError):
        asyncio.run(ours.retrieve("s1"))
    with pytest.raises(ConnectionError):
        asyncio.run(ours.save(tracker))
    assert asyncio.run(ours.fallback_tracker_store.retrieve("s1")) is None
