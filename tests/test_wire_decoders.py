"""The stream decoders (``chat.providers.wire``) against the exact bytes the wire
server sends (``tests.wire.dialects``), cut into arbitrary network reads.

Property: whatever the split of the body into reads (and so whatever batching
of events per read), and with garbage lines anywhere between events, the
decoded text, usage and finish are those of the stream, and every garbage
line is counted once.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chat.errors import RateLimited, Unavailable
from chat.events import Usage
from chat.providers.wire import AnthropicDecoder, Decoder, OllamaDecoder, OpenAIDecoder
from tests.wire import Script
from tests.wire.dialects import DIALECTS

DECODERS: dict[str, type[Decoder]] = {"openai": OpenAIDecoder, "anthropic": AnthropicDecoder, "ollama": OllamaDecoder}
BODY = {"model": "m", "stream": True, "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": "hi"}]}

# Token text as models produce it: any unicode (multi-byte characters get cut
# between reads), quotes, backslashes, newlines, "data:" and blank-line lookalikes.
token_text = st.one_of(
    st.text(min_size=1, max_size=12),
    st.sampled_from(["\n\n", "data: [DONE]\n\n", '"}', "\\", "é", "🙂", "\r\n", " "]),
)


@st.composite
def streams(draw: st.DrawFn, dialect: str) -> tuple[bytes, list[str], tuple[int, int], int]:
    """(body bytes, tokens, usage, garbage lines inserted)."""
    wire = DIALECTS[dialect]
    tokens = draw(st.lists(token_text, max_size=30))
    usage = (draw(st.integers(0, 10**6)), draw(st.integers(0, 10**6)))
    script = Script(tokens=tokens, usage=usage)
    events = [wire.start(script, BODY), *(wire.token(t, BODY) for t in tokens)]
    garbage = draw(st.lists(st.integers(0, len(events)), max_size=4))
    for at in sorted(garbage, reverse=True):
        events.insert(at, wire.malformed())
    events.append(wire.end(script, BODY, usage))
    body = b"".join(events)
    if dialect != "ollama" and draw(st.booleans()):
        body = body.replace(b"\n", b"\r\n")  # SSE allows CRLF line ends
    return body, tokens, usage, len(garbage)


def reads(body: bytes, sizes: list[int]) -> list[bytes]:
    """``body`` cut into consecutive reads of ``sizes`` bytes (cycled to the end)."""
    pieces, at = [], 0
    while at < len(body):
        for size in sizes:
            pieces.append(body[at:at + size])
            at += size
    return [piece for piece in pieces if piece]


def decode(dialect: str, pieces: list[bytes]) -> tuple[Decoder, str]:
    decoder = DECODERS[dialect]("wire:m")
    text = "".join(decoder.feed(piece) for piece in pieces) + decoder.close()
    return decoder, text


def check(dialect: str, data: Any, draw: st.DataObject) -> None:
    body, tokens, usage, garbage = data
    sizes = draw.draw(st.lists(st.integers(1, 80), min_size=1, max_size=12), label="read sizes")
    decoder, text = decode(dialect, reads(body, sizes))
    assert text == "".join(tokens)
    assert decoder.usage == Usage(*usage)
    assert (decoder.finish, decoder.done, decoder.error) == ("stop", True, None)
    assert decoder.malformed == garbage
    assert decoder.streamed == bool(text)


FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(streams("openai"), st.data())
def test_openai_any_split_gives_the_same_text_and_usage(data: Any, draw: st.DataObject) -> None:
    check("openai", data, draw)


@FAST
@given(streams("anthropic"), st.data())
def test_anthropic_any_split_gives_the_same_text_and_usage(data: Any, draw: st.DataObject) -> None:
    check("anthropic", data, draw)


@FAST
@given(streams("ollama"), st.data())
def test_ollama_any_split_gives_the_same_text_and_usage(data: Any, draw: st.DataObject) -> None:
    check("ollama", data, draw)


@FAST
@given(streams("openai"), st.integers(1, 7))
def test_one_byte_at_a_time_and_all_at_once_agree(data: Any, step: int) -> None:
    body = data[0]
    small = [body[i:i + step] for i in range(0, len(body), step)]
    assert decode("openai", small)[1] == decode("openai", [body])[1]


def test_events_of_one_read_are_joined_into_one_text() -> None:
    wire = DIALECTS["openai"]
    body = b"".join(wire.token(t, BODY) for t in ["a", "b", "c"])
    decoder = OpenAIDecoder("wire:m")
    assert decoder.feed(body) == "abc"


def test_a_stream_cut_before_its_end_marker_has_no_finish() -> None:
    wire = DIALECTS["anthropic"]
    script = Script(tokens=["Hel", "lo"])
    body = wire.start(script, BODY) + b"".join(wire.token(t, BODY) for t in script.tokens or [])
    decoder, text = decode("anthropic", [body])
    assert text == "Hello" and decoder.finish is None and not decoder.done


def test_error_events_end_decoding_with_their_class() -> None:
    for dialect, kind, expected in (("openai", "server_error", Unavailable), ("anthropic", "rate_limit_error", RateLimited),
                                    ("ollama", None, Unavailable)):
        wire = DIALECTS[dialect]
        script = Script(tokens=["a"], error_kind=kind)
        body = wire.start(script, BODY) + wire.token("a", BODY) + wire.error_event(script) + wire.token("b", BODY)
        decoder, text = decode(dialect, [body])
        assert text == "a", dialect  # the text before the error, nothing after it
        assert type(decoder.error) is expected and decoder.error.model == "wire:m", dialect
