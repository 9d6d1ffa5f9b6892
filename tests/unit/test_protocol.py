"""The client's side of the wire protocol (consumers/protocol.py): every way a frame is refused.

Pure: no database, no socket (scripts/mutation runs these).
"""

from __future__ import annotations

import json

import pytest

from consumers.protocol import (
    MAX_SINCE,
    Action,
    ProtocolError,
    is_utf8,
    kind,
    parse,
    parse_since,
    shown,
    since_from_query,
)

LIMIT = 64


def refused(text, data=None, max_bytes=LIMIT):
    with pytest.raises(ProtocolError) as caught:
        parse(text, data, max_bytes)
    return caught.value.code, caught.value.message


def test_each_action_parses_to_what_it_says():
    assert parse('{"action":"ping"}', None, LIMIT) == Action("ping")
    assert parse('{"action":"cancel"}', None, LIMIT) == Action("cancel")
    assert parse('{"action":"cancel","task":"a.b.1"}', None, LIMIT) == Action("cancel", "a.b.1")
    assert parse('{"action":"subscribe","task":"a.b.1","since":3}', None, LIMIT) == Action(
        "subscribe", "a.b.1", 3
    )
    assert parse('{"action":"subscribe","task":"a.b.1"}', None, LIMIT) == Action(
        "subscribe", "a.b.1", None
    )
    assert parse('{"action":"unsubscribe","task":"a.b.1"}', None, LIMIT) == Action(
        "unsubscribe", "a.b.1"
    )


def test_since_counts_only_on_subscribe():
    assert parse('{"action":"cancel","task":"a.b.1","since":"x"}', None, LIMIT).since is None
    assert parse('{"action":"unsubscribe","task":"a","since":4}', None, LIMIT).since is None


def test_a_binary_frame_is_refused():
    code, message = refused(None, b"{}")
    assert code == "bad_request" and message == "binary frames are not supported: send JSON text"


def test_a_frame_over_the_limit_is_too_large_in_characters_or_in_bytes():
    assert refused("x" * (LIMIT + 1)) == ("too_large", f"frames are limited to {LIMIT} bytes")
    assert refused("é" * (LIMIT // 2 + 1))[0] == "too_large"  # under the limit in characters
    padded = '{"action":"ping","pad":"' + "x" * (LIMIT - 26) + '"}'
    assert len(padded) == LIMIT and parse(padded, None, LIMIT) == Action("ping")


def test_not_json_or_too_deep_is_a_bad_request():
    assert refused("{not json") == ("bad_request", "a frame must be JSON text")
    assert refused("[" * 5000 + "]" * 5000, max_bytes=20000) == (
        "bad_request", "a frame must be JSON text"
    )


def test_a_frame_is_an_object():
    for text in ("[1]", '"ping"'):
        code, message = refused(text)
        assert code == "bad_request" and message.startswith("a frame is a JSON object, got ")


def test_an_unknown_or_missing_action_names_the_ones_there_are():
    expected = "expected one of subscribe, unsubscribe, cancel, ping"
    assert refused('{"action":"explode"}') == (
        "bad_request", f"unknown action 'explode'; {expected}"
    )
    assert refused("{}") == ("bad_request", f"unknown action None; {expected}")
    code, message = refused(json.dumps({"action": "y" * 100}), max_bytes=1000)
    assert message.startswith("unknown action 'yyy") and len(message) < 100 + len(expected)


def test_a_task_is_a_string_of_valid_unicode():
    code, message = refused('{"action":"cancel","task":5}')
    assert code == "bad_request" and message.startswith("task must be a string key, got ")
    assert refused('{"action":"cancel","task":"\\ud800"}') == (
        "bad_request", "task must be valid Unicode text"
    )


def test_subscribe_and_unsubscribe_need_a_task():
    assert refused('{"action":"subscribe"}') == ("bad_request", "subscribe needs a task key")
    assert refused('{"action":"unsubscribe"}') == ("bad_request", "unsubscribe needs a task key")


def test_since_is_a_whole_number_from_zero_to_the_largest_exact_javascript_integer():
    assert parse_since(None) is None
    assert parse_since(0) == 0 and parse_since(MAX_SINCE) == MAX_SINCE == 2**53 - 1
    assert parse_since("12") == 12
    for bad in (-1, MAX_SINCE + 1):
        with pytest.raises(ProtocolError) as caught:
            parse_since(bad)
        assert caught.value.code == "bad_request"
        assert caught.value.message == f"since must be between 0 and {MAX_SINCE}, got {bad}"


def test_since_as_digits_is_read_up_to_nineteen_of_them():
    assert parse_since("0") == 0 and parse_since("9" * 15) == int("9" * 15)
    with pytest.raises(ProtocolError):
        parse_since("9" * 19)  # out of range
    with pytest.raises(ProtocolError) as caught:
        parse_since("9" * 20)  # not even read as a number
    assert caught.value.message.startswith("since must be a whole number >= 0")


@pytest.mark.parametrize("bad", [True, False, 1.5, "1.5", "-1", "", [1], {"n": 1}])
def test_since_of_another_kind_is_refused_saying_what_came(bad):
    with pytest.raises(ProtocolError) as caught:
        parse_since(bad)
    assert caught.value.code == "bad_request"
    assert caught.value.message.startswith("since must be")


def test_a_bad_since_in_a_frame_is_refused():
    assert refused('{"action":"subscribe","task":"a","since":-3}')[0] == "bad_request"


def test_a_protocol_error_carries_its_code_message_and_task():
    error = ProtocolError("forbidden", "not yours", task="a.b.1")
    assert (error.code, error.message, error.task, str(error)) == (
        "forbidden", "not yours", "a.b.1", "not yours"
    )
    assert ProtocolError("bad_request", "no").task is None


def test_is_utf8():
    assert is_utf8("plain") and is_utf8("é✓")
    assert not is_utf8("\ud800")



def test_kinds_are_named_as_a_javascript_client_knows_them():
    assert [kind(v) for v in (None, True, 3, 1.5, "x", [1], {"a": 1})] == [
        "null", "a boolean", "a number", "a number", "a string", "an array", "an object",
    ]


def test_values_are_shown_short_and_sendable():
    assert shown("abc") == "'abc'"
    assert shown("x" * 38) == "'" + "x" * 38 + "'"  # 40 characters: whole
    assert shown("x" * 39) == "'" + "x" * 38 + "…"  # 41: cut to 40
    assert len(shown("y" * 100)) == 40
    assert shown("\ud800") == "'\\ud800'" and is_utf8(shown("\udfff" * 3))


def test_wrong_values_are_named_by_kind_and_shown():
    assert refused("[1, 2]") == ("bad_request", "a frame is a JSON object, got an array")
    assert refused('{"action":"cancel","task":5}') == (
        "bad_request", "task must be a string key, got a number"
    )
    with pytest.raises(ProtocolError) as caught:
        parse_since(True)
    assert caught.value.message == "since must be a whole number >= 0, got a boolean: True"
    with pytest.raises(ProtocolError) as caught:
        parse_since("4x")
    assert caught.value.message == "since must be a whole number >= 0 in ASCII digits, got '4x'"


def test_since_from_a_query_string_the_last_one_wins():
    assert since_from_query(b"since=3") == 3
    assert since_from_query(b"a=1&since=3&since=12") == 12
    assert since_from_query(bytearray(b"since=7")) == 7
    assert since_from_query(b"a=1") is None and since_from_query(b"") is None
    assert since_from_query("since=3") is None  # not the raw bytes of a scope
    with pytest.raises(ProtocolError):
        since_from_query(b"since=\xe9")
