"""The one SSE parser every stream reader uses: events survive any cut of the byte stream."""

from __future__ import annotations

import json

from llmops_lib.engines.base import StreamEvent
from llmops_lib.engines.sse import SSEDecoder, iter_events, stream_events

STREAM = (
    b'data: {"choices": [{"text": "Hel", "finish_reason": null}]}\n\n'
    b": a comment line\r\n"
    b'data: {"choices": [{"text": "lo", "finish_reason": null}]}\r\n\r\n'
    b'data: {"choices": [{"text": "", "finish_reason": "length"}], "usage": {"completion_tokens": 2}}\n\n'
    b"data: [DONE]\n\n"
)


def test_a_data_prefix_split_across_two_chunks_is_one_event():
    decoder = SSEDecoder()
    assert decoder.feed(b'{"ignored": 0}\n\nda') == [], "a line without a field name is not data"
    assert decoder.feed(b'ta: {"choices": []}\n') == [], "the event is not complete before its blank line"
    assert decoder.feed(b"\n") == ['{"choices": []}']


def test_every_cut_of_a_stream_gives_the_same_events():
    whole = SSEDecoder().feed(STREAM)
    assert [json.loads(p)["choices"][0]["text"] for p in whole[:3]] == ["Hel", "lo", ""] and whole[3] == "[DONE]"
    for cut in range(1, len(STREAM)):
        decoder = SSEDecoder()
        assert decoder.feed(STREAM[:cut]) + decoder.feed(STREAM[cut:]) == whole, f"cut at byte {cut}"


def test_byte_by_byte_then_done_ends_and_a_last_event_without_blank_line_counts():
    events = list(iter_events(STREAM[i : i + 1] for i in range(len(STREAM))))
    assert [e["choices"][0]["text"] for e in events] == ["Hel", "lo", ""]
    assert SSEDecoder().feed(b"data: a\ndata:b\n\n") == ["a\nb"], "one event's data lines join with a newline"
    tail = list(iter_events([b'data: {"choices": [{"text": "x"}]}']))
    assert tail == [{"choices": [{"text": "x"}]}], "a stream that ends without the blank line still gives its event"


def test_stream_events_of_completions_and_chat_chunks():
    completion = {"choices": [{"text": "a", "finish_reason": None}]}
    chat = {"choices": [{"delta": {"content": "b"}, "finish_reason": "stop"}], "usage": {"completion_tokens": 1}}
    usage_only = {"choices": [], "usage": {"completion_tokens": 3}}
    assert list(stream_events(completion)) == [StreamEvent("a", None, None)]
    assert list(stream_events(chat)) == [StreamEvent("b", "stop", {"completion_tokens": 1})]
    assert list(stream_events(usage_only)) == [StreamEvent("", None, {"completion_tokens": 3})]
