"""The server's side of the wire protocol (streamapp/protocol.py): frames and close codes."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from decimal import Decimal

import pytest

from streamapp import protocol
from streamapp.exceptions import EventNotSerializable


def test_frames_encode_compact_with_djangos_encoder_and_unicode_as_is():
    moment = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)
    text = protocol.encode({"a": [1, 2], "t": moment, "d": Decimal("1.5"), "s": "é"})
    assert text == '{"a":[1,2],"t":"2024-05-01T12:00:00Z","d":"1.5","s":"é"}'
    ident = uuid.UUID(int=1)
    assert json.loads(protocol.encode({"u": ident})) == {"u": str(ident)}


def test_a_frame_that_cannot_be_encoded_says_why():
    with pytest.raises(EventNotSerializable, match="event data is not JSON-serializable") as caught:
        protocol.encode({"x": object()})
    assert isinstance(caught.value.__cause__, TypeError)
    with pytest.raises(EventNotSerializable):
        protocol.encode({"x": float("nan")} | {"y": {1, 2}})


def test_event_state_and_error_frames_have_the_fields_of_design_3():
    moment = dt.datetime(2024, 5, 1, tzinfo=dt.UTC)
    assert protocol.event("a.b.1", 3, "step", {"n": 1}, moment) == {
        "type": "event", "task": "a.b.1", "seq": 3, "event": "step", "data": {"n": 1},
        "ts": "2024-05-01T00:00:00+00:00",
    }
    assert protocol.state("a.b.1", "failed", 4, None, {"type": "E", "message": "m"}) == {
        "type": "state", "task": "a.b.1", "status": "failed", "seq": 4, "final_value": None,
        "error": {"type": "E", "message": "m"},
    }
    assert protocol.state("a.b.1", "running", 0) == {
        "type": "state", "task": "a.b.1", "status": "running", "seq": 0, "final_value": None,
        "error": None,
    }
    assert protocol.error("bad_request", "no") == {
        "type": "error", "code": "bad_request", "message": "no",
    }
    assert protocol.error("history_truncated", "old", task="a.b.1", oldest_seq=5) == {
        "type": "error", "code": "history_truncated", "message": "old", "task": "a.b.1",
        "oldest_seq": 5,
    }
    assert json.loads(protocol.PONG) == {"type": "pong"}


def test_close_codes_of_each_refusal():
    assert protocol.CLOSE_CODES == {
        "forbidden": 4403, "not_found": 4404, "too_large": 1009, "rate_limited": 4429,
        "bad_request": 4400, "server_error": 1011,
    }


@pytest.mark.parametrize("code, sent", [
    (1000, 1000), (3000, 3000), (4404, 4404), (4999, 4999),
    (1009, 4009), (1012, 4012), (1001, 4001), (2999, 4999), (5000, 4000),
])
def test_a_server_that_allows_only_1000_and_3000_to_4999_gets_the_private_twin(code, sent):
    assert protocol.server_close_code(code) == sent
