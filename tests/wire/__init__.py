"""Local servers that speak the providers' real wire protocols, for tests and demos.

One small HTTP/1.1 server (raw asyncio, its own thread and event loop, bound to
127.0.0.1) answers all three protocols, since their paths do not clash:

    OpenAI     POST /v1/chat/completions   SSE ``chat.completion.chunk`` … ``data: [DONE]``
               (also /chat/completions; GET /v1/models lists nothing)
    Anthropic  POST /v1/messages            SSE with ``event:`` lines, message_start … message_stop
    Ollama     POST /api/chat               NDJSON, final line ``"done": true`` with counts
               GET  /api/tags               the configured model names; GET /api/version

Point the SDKs at it: ``OPENAI_BASE_URL=http://127.0.0.1:PORT/v1``,
``ANTHROPIC_BASE_URL=http://127.0.0.1:PORT``, ``OLLAMA_HOST=http://127.0.0.1:PORT``.
Any API key is accepted. Ollama chat requests for a model not in the list get 404.
It also serves plain-HTTP requests sent to it as a forward proxy
(``HTTP_PROXY=http://127.0.0.1:PORT``; ``Recorded.proxied``), and with
``keep_alive=True`` (``--keep-alive``) one connection serves request after
request, as providers' servers do (``Recorded.peer`` tells connections apart).

In tests::

    with WireServer() as wire:
        wire.enqueue(Script(tokens=["Hel", "lo"], cut_after=1))
        ...                                  # point the SDK at wire.url
        wire.chat_requests[0].body           # every request is recorded (body JSON, headers)
        await wire.wait_disconnect(1.0)      # the record whose client went away mid-response

Standalone (for the running app, browser and end-to-end tests)::

    python -m tests.wire --openai-port 9101 --anthropic-port 9102 --ollama-port 9103
    python -m tests.wire --port 9100 --ollama-models llama3.2:latest,qwen2.5:0.5b

Scripting from outside: with no enqueued script, the reply echoes the user's last
message as tokens ``["Echo:", " word1", " word2", …]`` (magic words removed; an
empty message gives ``["Echo", "."]``), and magic words anywhere in that message
change what happens (token counts N refer to that token list)::

    [[fail:503]]          HTTP error with that status, body in the provider's error shape
    [[fail:400:context]]  400 context-length error (also [[fail:400:content_filter]]);
                          a third part that is neither sets the error type/code
    [[retry-after:7]]     add ``Retry-After: 7`` to the response (use with [[fail:429]])
    [[error-event:3]]     in-stream error after 3 tokens (OpenAI error chunk, Anthropic
                          ``event: error`` overloaded_error, Ollama ``{"error": …}`` line)
    [[cut:3]]             close the socket after 3 tokens (no terminating chunk)
    [[no-end]]            end the body cleanly but without the end marker
                          (no finish_reason/[DONE], no message_stop, no done:true)
    [[cut-at-end]]        send the end marker, then close the socket without the
                          terminating chunk (OpenAI: before [DONE]); a complete answer
    [[malformed:2]]       one malformed JSON data line after 2 tokens, then go on
    [[stall:5]]           5 s of silence before the first token; [[stall:5:3]] after 3
    [[delay:0.05]]        0.05 s before every token
    [[tokens:200]]        reply with 200 tokens "w0 ", "w1 ", … instead of the echo
    [[finish:length]]     the provider's stop reason (e.g. length, max_tokens)
    [[malformed-every:5]] a malformed line after every 5 tokens (the answer goes on)
    [[rate:500]]          500 tokens per second, paced against the clock from the first
                          token (with [[stall:0.1]]: first token after 100 ms)
    [[burst]]             the whole body in one write, so the client finds it all waiting

Faults for answer integrity (issue 11)::

    [[hang]]              accept the request and never send the status line
    [[slow-headers:1.5]]  1.5 s of silence before the status line, then answer normally
    [[window:40]]         the model's real window is 40 prompt words: a longer request
                          gets the 400 context-length error (whatever the catalogue says)
    [[error-event:3:429]] in-stream error after 3 tokens, of the kind of that status: 429 is
                          a rate limit whose message says "try again in Ns" when
                          [[retry-after:N]] is given (the header is sent too); 5xx/529 overloaded
    [[continue:plain]]    how the default reply answers a continuation request (below)

Continuation requests. A router continuing a cut answer sends the original
turn, an assistant message with the partial answer, and a last user message
quoting the tail to restate between ``<tail>`` tags. With no enqueued script
the reply then goes on from the partial answer of the reply the original
message would get (its echo, or ``[[tokens:N]]``), in the ``continuation``
style of ``Script``: ``restate`` (the default: a compliant model, which begins
with the quoted tail and carries straight on), ``plain`` (a fresh message that
just goes on, no leading space), ``sentence`` (repeats the current sentence),
``whole`` (starts the whole answer again) or ``echo`` (echoes the instruction,
as for any other message). Only words scoped to the continuing model (and the
reply-shaping ``[[tokens:N]]`` / ``[[continue:…]]``) apply to it.

Any of them can be scoped to one model with ``@name`` (the model as the request
names it; ``llama3.2`` also matches ``llama3.2:latest``), so one message can make
the primary fail and let the fallback answer::

    [[fail:503@gpt-x]]    only requests for model gpt-x fail; others answer normally
    [[cut:10@gpt-x]] [[delay:0.2@claude-y]]
    [[no-end@gpt-x]]

Scoped words are read from every user message of the request, not just the
last, so they also apply to a router's continuation request (whose last user
message is its "continue" instruction). Unscoped words come from the last user
message only; a scoped word overrides an unscoped one of the same name.
"""

from .dialects import Script, default_tokens, parse_magic
from .server import Recorded, WireServer

__all__ = ["Recorded", "Script", "WireServer", "default_tokens", "parse_magic"]
