"""Every value a client controls, read by explicit ASCII rules: a ProtocolError, an UnknownTask or
None for anything wrong, never another exception (DESIGN §4 malformed input).

Property-based over full Unicode (surrogates included), nested and oversized structures, with a
fixed example budget and derandomized draws so CI runs the same cases every time.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from consumers.protocol import MAX_SINCE, ProtocolError, parse, parse_since, since_from_query
from streamapp.addresses import parse_address, resolve
from streamapp.asgi.handshakes import presented_credential
from streamapp.asgi.origin import parse_origin
from streamapp.exceptions import UnknownTask
from streamapp.keys import route_key, split_key
from streamapp.tokens import bearer_from_header, token_from_scope

FRAME_LIMIT = 64 * 1024
PROFILE = hypothesis_settings(
    max_examples=300, derandomize=True, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Every code point, lone surrogates too (a communicator or a buggy proxy can hand them over).
ANY_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=60)
# Characters str.isdigit() or int() take that are not ASCII digits.
UNICODE_DIGITS = ["²", "¹", "⁰", "①", "١٢", "٣", "০", "𝟘", "１２", "߁"]
# Digits and numbers of every script, drawn.
NUMERALS = st.text(st.characters(categories=["Nd", "No", "Nl"]), min_size=1, max_size=3)


def json_values(leaf=None):
    scalars = (st.none() | st.booleans() | st.integers() | st.floats() | ANY_TEXT
               | st.integers(min_value=10**18, max_value=10**40))
    return st.recursive(
        leaf or scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ANY_TEXT, inner, max_size=4),
        max_leaves=12,
    )


def frames():
    fields = st.fixed_dictionaries(
        {"action": st.sampled_from(["subscribe", "unsubscribe", "cancel", "ping"]) | json_values()},
        optional={
            "task": st.sampled_from(["demo.exampletask.1", "auth.user.1", ""]) | ANY_TEXT
            | json_values(),
            "since": NUMERALS | st.integers() | ANY_TEXT | json_values(),
        },
    )
    text = (
        fields.map(lambda f: json.dumps(f, ensure_ascii=False))
        | fields.map(json.dumps)
        | json_values().map(lambda v: json.dumps(v, ensure_ascii=False))
        | ANY_TEXT
        | st.sampled_from(["[" * 50_000, '{"a":' * 20_000, "9" * 5000, "x" * (FRAME_LIMIT + 1),
                           '{"action": "ping", "pad": "' + "é" * (FRAME_LIMIT // 2) + '"}'])
    )
    return st.one_of(text.map(lambda t: (t, None)), st.binary(max_size=40).map(lambda b: (None, b)))


@PROFILE
@given(frame=frames())
def test_a_frame_is_an_action_or_a_protocol_error(frame):
    text, data = frame
    try:
        action = parse(text, data, FRAME_LIMIT)
    except ProtocolError as exc:
        assert exc.code in {"bad_request", "too_large"}
        assert len(exc.message) < 300
        exc.message.encode("utf-8")  # sendable: never echoes a lone surrogate
        return
    assert action.name in {"subscribe", "unsubscribe", "cancel", "ping"}
    if action.task is not None:
        action.task.encode("utf-8")
    if action.since is not None:
        assert 0 <= action.since <= MAX_SINCE


@PROFILE
@given(value=NUMERALS | ANY_TEXT | json_values())
def test_since_is_a_number_or_a_protocol_error(value):
    try:
        since = parse_since(value)
    except ProtocolError as exc:
        assert exc.code == "bad_request"
        exc.message.encode("utf-8")
        return
    assert since is None or 0 <= since <= MAX_SINCE


@pytest.mark.parametrize("since", UNICODE_DIGITS)
def test_since_in_digits_that_are_not_ascii_is_a_bad_request(since):
    """The issue's crash: "²".isdigit() is True and int("²") raises; "١٢" was read as 12."""
    frame = json.dumps({"action": "subscribe", "task": "demo.exampletask.1", "since": since})
    with pytest.raises(ProtocolError) as refused:
        parse(frame, None, FRAME_LIMIT)
    assert refused.value.code == "bad_request"
    assert refused.value.message.startswith("since must be a whole number >= 0 in ASCII digits")


@pytest.mark.parametrize("value, expected", [
    (None, None), (0, 0), (7, 7), ("7", 7), ("0042", 42), (MAX_SINCE, MAX_SINCE),
    (str(MAX_SINCE), MAX_SINCE),
])
def test_since_accepts_json_numbers_and_ascii_digit_strings(value, expected):
    assert parse_since(value) == expected


@pytest.mark.parametrize("value", [
    -1, MAX_SINCE + 1, True, 1.0, 1.5, "", " 7", "7 ", "+7", "-7", "0x10", "1e3", "7\n",
    "9" * 17, [], {}, "٧",
])
def test_since_refuses_everything_else(value):
    with pytest.raises(ProtocolError, match="since must be"):
        parse_since(value)


@PROFILE
@given(query=st.binary(max_size=80) | st.builds(
    lambda value: b"since=" + value.encode("utf-8", "surrogatepass"), NUMERALS | ANY_TEXT))
@example(query="since=²".encode())
@example(query=b"since=\xb2")  # latin-1 "²"
def test_a_query_string_since_is_a_number_none_or_a_protocol_error(query):
    try:
        since = since_from_query(query)
    except ProtocolError as exc:
        assert exc.code == "bad_request"
        return
    assert since is None or 0 <= since <= MAX_SINCE


def test_query_since_takes_the_last_value_and_ignores_other_fields():
    assert since_from_query(b"token=x&since=3&since=5") == 5
    assert since_from_query(b"token=x") is None
    assert since_from_query(None) is None


@PROFILE
@given(key=ANY_TEXT | json_values() | st.from_regex(
    r"[a-zA-Z]{1,8}\.[a-zA-Z]{1,12}\.[0-9a-z_-]{1,42}", fullmatch=True))
@example(key="testapp.steptask.١")
@example(key="demo.exampletask.99999999999999999999999999999999999999")
@example(key="demo.ExampleTask.1")
def test_a_key_is_a_model_and_pk_or_unknown_task(key):
    try:
        model, pk = split_key(key)
    except UnknownTask as exc:
        str(exc).encode("utf-8")
        return
    assert model._meta.app_label in {"demo", "testapp", "runnerapp"}
    assert str(pk).isascii()


@PROFILE
@given(parts=st.tuples(ANY_TEXT, ANY_TEXT, ANY_TEXT))
@example(parts=("tëstapp", "steptask", "1"))
@example(parts=("demo", "exampletask", "1\ud800"))
@example(parts=("demo", "exampletask", "١"))
def test_a_task_path_is_a_key_or_unknown_task(parts):
    try:
        key = route_key(*parts)
    except UnknownTask as exc:
        str(exc).encode("utf-8")
        return
    assert key.isascii() and key.count(".") == 2


def test_a_task_path_keeps_the_canonical_key():
    assert route_key("demo", "ExampleTask", "7") == "demo.exampletask.7"


@PROFILE
@given(value=st.binary(max_size=80))
@example(value=b"http://[::1")
@example(value=b"http://localhost:99999")
@example(value=b"http://localhost:x")
@example(value=b"null")
def test_an_origin_header_is_parsed_or_refused(value):
    parsed = parse_origin(value)
    if parsed is not None:
        assert parsed.hostname is not None and (parsed.port is None or parsed.port <= 65535)


@PROFILE
@given(headers=st.lists(st.tuples(st.sampled_from([b"authorization", b"cookie", b"x-other"]),
                                  st.binary(max_size=60)), max_size=4),
       query=st.binary(max_size=60))
def test_tokens_and_cookies_are_read_from_any_header_bytes(headers, query):
    scope = {"headers": headers, "query_string": query}
    token = token_from_scope(scope)
    assert token is None or isinstance(token, str)
    credential = presented_credential(scope)
    assert credential is None or (credential.isascii() and len(credential) == 25)


def test_bearer_needs_the_scheme_and_a_token():
    assert bearer_from_header("Bearer abc") == "abc"
    assert bearer_from_header("bearer\tabc") is None  # the scheme is followed by a space
    assert bearer_from_header("Bearer ") is None
    assert bearer_from_header("Basic abc") is None
    assert bearer_from_header(None) is None


@PROFILE
@given(entries=st.lists(ANY_TEXT | st.from_regex(r"[0-9.:\[\]a-f]{1,45}", fullmatch=True),
                        max_size=5),
       trust=st.none() | st.integers(min_value=0, max_value=4))
def test_forwarded_entries_never_raise(entries, trust):
    address = resolve("127.0.0.1", entries, trust)
    assert address is None or parse_address(address) == address


@pytest.mark.parametrize("text, expected", [
    ("192.0.2.1", "192.0.2.1"), (" 192.0.2.1 ", "192.0.2.1"), ("192.0.2.1:443", "192.0.2.1"),
    ("[2001:db8::1]:443", "2001:db8::1"), ("2001:DB8::1", "2001:db8::1"),
    ("::ffff:192.0.2.1", "192.0.2.1"), ("unknown", None), ("_hidden", None),
    ("١٩٢.0.2.1", None), ("192.0.2.256", None), ("", None),
])
def test_addresses_by_ascii_rules(text, expected):
    assert parse_address(text) == expected
