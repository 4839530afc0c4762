"""The stock Rasa 3.6.21 functions this project replaces, all here, installed by ``install()``.

Each replacement does what the stock function does, minus a cost measured on every turn
(bench/RESULTS.md, "Where a turn's CPU goes"):

- ``RemoteAction._validate_action_result``: stock calls ``jsonschema.validate``, which checks the
  schema itself and builds a new validator on every action call (10-20 ms for a two-event
  response). Here the schema is checked once and one validator is reused, and a response is first
  checked by jsonschema_rs's validator for the same draft (Rust, about 400 times as fast); the same
  response is accepted or rejected with the same ``ValidationError`` and message.
- ``EndpointConfig.request``: stock builds and tears down an aiohttp session (connector, cookie
  jar, timeouts) for every action call. Here each endpoint keeps one session per event loop; each
  call still opens its own connection (as stock: a reused keep-alive connection can be closed by the
  server just as it is reused), carries no cookies, and calls are not capped.
- ``DaskGraphRunner.run``: stock builds a dask graph and runs dask's scheduler for every parse and
  every prediction (about a tenth of a flow turn's CPU), after recomputing the nodes the targets
  need by an unmemoised recursion. Here the needed nodes are found once per set of targets and run
  in dependency order by a plain recursion; nodes, inputs, results and errors are the same.
- ``Event.resolve_by_type``: stock walks every subclass of ``Event`` (``all_subclasses``) for each
  event it deserialises. Here a name -> class table, rebuilt when a name is not in it (an event
  class imported later).

And one that is not about cost:

- ``FailSafeTrackerStore.on_tracker_store_error`` and ``on_tracker_store_retrieve_error``: when the
  tracker store fails (the database is unreachable), stock logs and carries on with an in-memory
  store: the citizen is answered as a stranger (no conversation, no form), and the turn is kept in
  that replica's memory only, never in the database. For a store that says ``fail_safe = False``
  (``HezeTrackerStore``) the error is raised instead: the turn fails, the channel apologises (the
  WeChat channel keeps the message and answers it when the database is back), and nothing of the
  turn is written. Other stores keep stock's behaviour.

The guard: ``install()`` refuses (``IncompatibleRasa``) unless Rasa is the pinned version and the
source of every replaced function is exactly the one these replacements were written against;
so an upgrade of Rasa fails at start-up, loudly, instead of running a stale copy.
"""
from __future__ import annotations

import asyncio
import hashlib
import inspect
import logging
import os
import ssl
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Text, Tuple

logger = logging.getLogger(__name__)

PINNED_RASA = "3.6.21"


class IncompatibleRasa(RuntimeError):
    """The installed Rasa is not the one the replacements were written against."""


@dataclass(frozen=True)
class Replacement:
    owner: Any
    name: str
    original_sha256: str
    make: Callable[[], Any]  # builds the replacement

    def stock(self) -> Any:
        return stock(self.owner, self.name)

    def check(self) -> None:
        digest = source_sha256(self.stock())
        if digest != self.original_sha256:
            raise IncompatibleRasa(
                f"{self.owner.__qualname__}.{self.name} is not the Rasa {PINNED_RASA} function "
                f"rasa_runtime.patches replaces (source sha256 {digest[:12]}); review the replacement"
            )


def source_sha256(function: Any) -> str:
    target = function.__func__ if isinstance(function, (staticmethod, classmethod)) else function
    return hashlib.sha256(inspect.getsource(target).encode()).hexdigest()


# --- RemoteAction._validate_action_result -------------------------------------------------------

def _make_validate_action_result() -> Any:
    from jsonschema.exceptions import best_match
    from jsonschema.validators import validator_for
    from rasa.core.actions.action import RemoteAction
    from rasa.shared.constants import DOCS_BASE_URL

    schema = RemoteAction.action_response_format_spec()
    cls = validator_for(schema)
    cls.check_schema(schema)
    validator = cls(schema)
    quick = _rust_validator(cls.__name__, schema)

    def _validate_action_result(self: Any, result: Dict[Text, Any]) -> bool:
        if quick is not None and not _names_retrieval_intents(result) and quick(result):
            return True
        error = best_match(validator.iter_errors(result))
        if error is None:
            return True
        error.message += (
            f". Failed to validate Action server response from API, "
            f"make sure your response from the Action endpoint is valid. "
            f"For more information about the format visit "
            f"{DOCS_BASE_URL}/custom-actions"
        )
        raise error

    return _validate_action_result


def _names_retrieval_intents(result: Any) -> bool:
    """Whether an event's ``parse_data`` holds a ``response_selector``: the schema's one
    ``patternProperties`` (``[\\w/]``) sits there, and jsonschema_rs reads ``\\w`` as ASCII where Python
    reads any letter, so for a key such as 好 the two can disagree (jsonschema_rs accepting what
    jsonschema refuses). Such responses (an action server hardly ever sends one) skip the quick check."""
    events = result.get("events") if isinstance(result, dict) else None
    return isinstance(events, list) and any(
        isinstance(e, dict) and isinstance(e.get("parse_data"), dict) and "response_selector" in e["parse_data"]
        for e in events)


def _rust_validator(draft: str, schema: Dict[Text, Any]) -> Optional[Callable[[Any], bool]]:
    """``is_valid`` of jsonschema_rs's validator for the same draft, or None when it has none.

    Checking a valid response this way takes about 4 us against about 1.7 ms through jsonschema's
    ``iter_errors`` (the events' ``oneOf`` over every event type is tried in Python): a tenth of a
    flow turn's CPU in the production profile. Only "valid" is taken from it; a response it refuses
    goes through jsonschema, so the error raised and its message stay stock's. Where it could say
    "valid" to what jsonschema refuses (``_names_retrieval_intents``) it is not asked;
    tests/rasa_env/test_patches.py holds the two to agree on generated responses."""
    try:
        import jsonschema_rs
    except ImportError:  # pragma: no cover - it is in requirements/rasa.lock
        return None
    rust = getattr(jsonschema_rs, draft, None)
    return rust(schema).is_valid if rust is not None else None


# --- EndpointConfig.request ----------------------------------------------------------------------

# id(config) -> (weak reference to the config, its event loop, its session); configs are unhashable.
_sessions: Dict[int, Tuple[Any, Any, Any]] = {}


def _shared_session(config: Any) -> Any:
    """One aiohttp session per endpoint configuration and event loop (stock: one per request)."""
    import aiohttp
    from rasa.utils.endpoints import DEFAULT_REQUEST_TIMEOUT

    loop = asyncio.get_running_loop()
    held = _sessions.get(id(config))
    if held is not None and held[0]() is config and held[1] is loop and not held[2].closed:
        return held[2]
    auth = (aiohttp.BasicAuth(config.basic_auth["username"], config.basic_auth["password"])
            if config.basic_auth else None)
    session = aiohttp.ClientSession(
        headers=config.headers, auth=auth, timeout=aiohttp.ClientTimeout(total=DEFAULT_REQUEST_TIMEOUT),
        # as stock's session per request: no cookies carried between calls, no cap on concurrent calls,
        # a new connection for each call (a kept-alive one can be closed by the server just as it is
        # reused, for example when the action server was stalled past its keep-alive timeout)
        cookie_jar=aiohttp.DummyCookieJar(), connector=aiohttp.TCPConnector(limit=0, force_close=True),
    )
    key = id(config)
    _sessions[key] = (weakref.ref(config, lambda _: _sessions.pop(key, None)), loop, session)
    return session


async def close_sessions() -> None:
    """Close the sessions of this event loop (the rest channel calls it when the server stops)."""
    loop = asyncio.get_running_loop()
    for key, (_, held_loop, session) in list(_sessions.items()):
        if held_loop is loop:
            _sessions.pop(key, None)
            await session.close()


def _make_request() -> Any:
    from aiohttp import ContentTypeError
    from rasa.shared.exceptions import FileNotFoundException
    from rasa.utils.endpoints import ClientResponseError, concat_url

    async def request(self: Any, method: Text = "post", subpath: Optional[Text] = None,
                      content_type: Optional[Text] = "application/json", compress: bool = False,
                      **kwargs: Any) -> Optional[Any]:
        """Send an HTTP request to the endpoint; return its JSON body, if any (stock behaviour)."""
        headers = {}
        if content_type:
            headers["Content-Type"] = content_type
        if "headers" in kwargs:
            headers.update(kwargs["headers"])
            del kwargs["headers"]
        if self.headers:
            headers.update(self.headers)
        url = concat_url(self.url, subpath)
        sslcontext = None
        if self.cafile:
            try:
                sslcontext = ssl.create_default_context(cafile=self.cafile)
            except FileNotFoundError as e:
                raise FileNotFoundException(
                    f"Failed to find certificate file, '{os.path.abspath(self.cafile)}' does not exist."
                ) from e
        session = _shared_session(self)
        async with session.request(method, url, headers=headers, params=self.combine_parameters(kwargs),
                                   compress=compress, ssl=sslcontext, **kwargs) as response:
            if response.status >= 400:
                raise ClientResponseError(response.status, response.reason, await response.content.read())
            try:
                return await response.json()
            except ContentTypeError:
                return None

    return request


# --- Event.resolve_by_type -----------------------------------------------------------------------

def _make_resolve_by_type() -> Any:
    from rasa.shared.core.events import Event
    from rasa.shared.utils.common import all_subclasses

    table: Dict[Text, Any] = {}

    def rebuild() -> None:
        table.clear()
        for cls in all_subclasses(Event):
            table.setdefault(cls.type_name, cls)  # stock returns the first match

    def resolve_by_type(type_name: Text, default: Optional[Any] = None) -> Optional[Any]:
        """Returns the event class of a type name (stock behaviour, without walking the classes)."""
        cls = table.get(type_name)
        if cls is None:
            rebuild()
            cls = table.get(type_name)
        if cls is not None:
            return cls
        if type_name == "topic":
            return None  # backwards compatibility to support old TopicSet evts
        if default is not None:
            return default
        raise ValueError(f"Unknown event name '{type_name}'.")

    return staticmethod(resolve_by_type)


# --- DaskGraphRunner.run ------------------------------------------------------------------------

def _make_graph_run() -> Any:
    from rasa.engine.exceptions import GraphRunError

    def run(self: Any, inputs: Optional[Dict[Text, Any]] = None,
            targets: Optional[List[Text]] = None) -> Dict[Text, Any]:
        """Runs the graph's nodes that the targets need, each once, parents first (as dask does)."""
        run_targets = targets if targets else self._graph_schema.target_names
        schemas = self.__dict__.setdefault("_rasa_runtime_minimal_schemas", {})
        minimal = schemas.get(tuple(run_targets))
        if minimal is None:
            minimal = schemas[tuple(run_targets)] = self._graph_schema.minimal_graph_schema(run_targets)
        results: Dict[Text, Any] = {}
        for input_name, input_value in (inputs or {}).items():
            if isinstance(input_value, str) and (input_value in minimal.nodes or input_value in results):
                raise GraphRunError(
                    f"Input value '{input_value}' clashes with a node name. Make sure "
                    f"that none of the input names passed to the `run` method are the "
                    f"same as node names in the graph schema."
                )
            results[input_name] = (input_name, input_value)

        def compute(name: Text) -> Any:
            if name in results:
                return results[name]
            node = minimal.nodes.get(name)
            if node is None:
                return name  # dask hands a name it cannot resolve on as it is; GraphNode warns
            results[name] = self._instantiated_nodes[name](*[compute(need) for need in node.needs.values()])
            return results[name]

        try:
            return dict(compute(target) for target in run_targets)
        except RuntimeError as e:
            raise GraphRunError("Error running runner.") from e

    return run


# --- FailSafeTrackerStore: no silent in-memory fallback for a store that asks for none -----------

def _make_on_error(name: str) -> Callable[[], Any]:
    def make() -> Any:
        from rasa.core.tracker_store import FailSafeTrackerStore

        fallback = stock(FailSafeTrackerStore, name)

        def on_error(self: Any, error: Exception) -> None:
            if getattr(self._tracker_store, "fail_safe", True):
                return fallback(self, error)
            logger.error("tracker store unavailable (%s): the turn fails rather than run without its "
                         "conversation", type(error).__name__)
            raise error
        return on_error
    return make


def replacements() -> list[Replacement]:
    from rasa.core.actions.action import RemoteAction
    from rasa.core.tracker_store import FailSafeTrackerStore
    from rasa.engine.runner.dask import DaskGraphRunner
    from rasa.shared.core.events import Event
    from rasa.utils.endpoints import EndpointConfig

    return [
        Replacement(RemoteAction, "_validate_action_result",
                    "f8cdb4be6812396167ced74161b2ccd65c5ea676ad86d7d359d8c322d9d8dc42", _make_validate_action_result),
        Replacement(EndpointConfig, "request",
                    "ccdb778aed8208e23cde3c3f47eac7fbbbb735dac8f7ef7254d54451c64ad608", _make_request),
        Replacement(Event, "resolve_by_type",
                    "b5cf570fa7f286c7059ec73d8880528d03a78b28cf4e80285a46079c0fa65968", _make_resolve_by_type),
        Replacement(DaskGraphRunner, "run",
                    "45f0f52f574f3aa9546a552bf671183e171092c18b66e97f5771a7fa295de37e", _make_graph_run),
        Replacement(FailSafeTrackerStore, "on_tracker_store_error",
                    "6faca7ba72b36da4594c789a1ee9d86ea185a8785a1e0543199b63bf02937e12",
                    _make_on_error("on_tracker_store_error")),
        Replacement(FailSafeTrackerStore, "on_tracker_store_retrieve_error",
                    "162b49564c52ab49f2be6a40ed56d11564e6607fdcd6975d44e678f69ca6ce9d",
                    _make_on_error("on_tracker_store_retrieve_error")),
    ]


_STOCK: Dict[Any, Any] = {}


def check() -> list[Replacement]:
    """The replacements, after checking the Rasa version and every replaced function's source."""
    import rasa

    if rasa.__version__ != PINNED_RASA:
        raise IncompatibleRasa(f"rasa_runtime.patches is written for Rasa {PINNED_RASA}, found {rasa.__version__}")
    chosen = replacements()
    for replacement in chosen:
        replacement.check()
    return chosen


def install() -> None:
    """Put every replacement in place (once per process); raises ``IncompatibleRasa`` first if unsure."""
    for replacement in check():
        key = (replacement.owner, replacement.name)
        if key in _STOCK:
            continue
        _STOCK[key] = inspect.getattr_static(replacement.owner, replacement.name)
        setattr(replacement.owner, replacement.name, replacement.make())
    logger.info("rasa_runtime: %d Rasa %s functions replaced", len(_STOCK), PINNED_RASA)


def stock(owner: Any, name: str) -> Any:
    """The stock function a replacement stands in for (tests compare the two)."""
    return _STOCK.get((owner, name), inspect.getattr_static(owner, name))
