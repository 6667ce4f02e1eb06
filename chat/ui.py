"""The Gradio UI: a ChatInterface driven by an async generator.

This module is the one boundary between Gradio's shapes and ours: history in
(browser parts or API strings, notes included) becomes ``Message`` tuples;
typed events out become message dicts (notes first, answer last; see ``chat.render``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import gradio as gr

from .catalogue import AUTO
from .errors import ChatError, InputError, ProviderError
from .messages import Message
from .render import AnswerView
from .runtime import Runtime
from .service import Turn
from .streaming import Pacer, coalesce

__all__ = ["build_demo", "history_to_messages", "model_choices"]

log = logging.getLogger(__name__)

def history_to_messages(history: Sequence[Any]) -> tuple[Message, ...]:
    """Gradio history → user/assistant turns.

    Accepts both shapes Gradio sends (browser: content as a list of parts;
    API: plain strings), drops our own notes (messages with ``metadata.title``)
    and user messages that got no answer, and joins consecutive assistant
    messages, so providers that need strict alternation (Anthropic) accept it.
    """
    out: list[Message] = []
    for item in history or ():
        if not isinstance(item, dict):
            role = getattr(item, "role", None)
            content = getattr(item, "content", None)
            metadata = getattr(item, "metadata", None)
        else:
            role, content, metadata = item.get("role"), item.get("content"), item.get("metadata")
        if role not in ("user", "assistant"):
            continue
        if isinstance(metadata, dict) and metadata.get("title"):
            continue
        text = _content_text(content)
        if not text:
            continue
        if out and out[-1].role == role == "assistant":
            out[-1] = Message(role, out[-1].content + "\n\n" + text)
        elif out and out[-1].role == role == "user":
            # The earlier message got no answer (refused, or every model
            # failed before any text): it is not part of the conversation.
            out[-1] = Message(role, text)
        else:
            out.append(Message(role, text))
    return tuple(out)


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return str(content.get("text") or content.get("value") or "")
    if isinstance(content, (list, tuple)):
        return "".join(_content_text(part) for part in content)
    return str(getattr(content, "text", "") or "")


def model_choices(runtime: Runtime) -> list[tuple[str, str]]:
    """Dropdown entries ``(label, id)``: Auto, then every model with its state."""
    choices = [("Auto — picks a model by the prompt", AUTO)]
    for option in runtime.router.options():
        spec, availability = option.spec, option.availability
        label = f"{spec.label} · {spec.id}"
        if not availability.ready:
            label += f" — {availability.state.value}"
            if availability.until is not None:
                label += " until " + time.strftime("%H:%M:%S", time.localtime(availability.until))
            if availability.detail:
                label += f" ({availability.detail})"
        choices.append((label, spec.id))
    return choices


NOTE_DELAY = 0.25  # seconds a notes-only update may wait for the first text

MODEL_INFO = "Auto picks by the prompt; if a model fails, the next one takes over and you are told."


def model_info(runtime: Runtime) -> str:
    """The dropdown's help line, plus the state of servers whose models are discovered."""
    ollama = runtime.providers.get("ollama")
    if ollama is None:
        return MODEL_INFO
    state = ollama.availability("")
    if state.ready:
        if not any(o.spec.provider == "ollama" for o in runtime.router.options()):
            return MODEL_INFO + " Ollama is reachable but lists no models (ollama pull <model>)."
        return MODEL_INFO
    return (MODEL_INFO + f" Ollama {state.state.value} ({state.detail}): start it or set OLLAMA_HOST,"
            " then refresh.")


def build_demo(runtime: Runtime) -> gr.Blocks:
    settings = runtime.settings
    service = runtime.service
    pacer = Pacer(settings.stream_interval_ms / 1000)

    async def respond(
        message: str,
        history: list[Any],
        model_id: str | None,
        system_prompt: str | None,
        temperature: float | None,
        max_tokens: float | None,
    ):
        turn = Turn(
            message=message if isinstance(message, str) else _content_text(message),
            history=history_to_messages(history),
            model_id=(model_id or AUTO).strip(),
            system_prompt=system_prompt if system_prompt is not None else settings.system_prompt,
            temperature=temperature,
            max_tokens=int(max_tokens) if max_tokens else None,
        )
        view = AnswerView(runtime.router.catalogue)
        try:
            started = time.monotonic()
            shown = held = False
            with pacer.streaming():
                updates = coalesce(service.respond(turn), lambda: pacer.interval(len(view.text)), idle=NOTE_DELAY)
                async for batch in updates:
                    for event in batch:
                        view.apply(event)
                    if not batch and shown:
                        continue  # an idle tick with nothing new
                    if not view.text and time.monotonic() - started < NOTE_DELAY:
                        # Text usually follows within a blink: one update instead
                        # of two (each yield costs a round of Gradio processing).
                        held = True
                        continue
                    shown, held = True, False
                    yield view.messages()
            if held:
                yield view.messages()  # ended quickly with no text: still one final update
        except InputError as exc:
            raise gr.Error(str(exc), title="Cannot send this message", print_exception=False) from exc
        except ChatError as exc:
            # A model failure ends the answer, not the conversation: the partial
            # text and a note saying what failed stay in the chat, a toast says
            # so, and the page stays usable. (A raised gr.Error would cover the
            # whole chat with an error overlay.)
            message = exc.describe() if isinstance(exc, ProviderError) else str(exc)
            if isinstance(exc, ProviderError) and exc.model:
                message = f"{exc.model}: {message}"
            view.fail(message)
            gr.Warning(message, title="The answer could not be completed")
            yield view.messages()

    def check_message(message: Any, *_: Any):
        # Runs before the textbox is cleared, so a refused message stays where
        # the user typed it. The /chat API path is checked by the service.
        problem = service.message_problem(message if isinstance(message, str) else _content_text(message))
        return gr.validate(problem is None, problem or "")

    async def refresh_models(current: str | None):
        await runtime.refresh()
        choices = model_choices(runtime)
        ids = {value for _, value in choices}
        return gr.Dropdown(choices=choices, value=current if current in ids else AUTO, info=model_info(runtime))

    with gr.Blocks(title="Relay Chat", fill_height=True) as demo:
        with gr.Row():
            model = gr.Dropdown(
                choices=model_choices(runtime),
                value=settings.default_model,
                label="Model",
                info=MODEL_INFO,
                scale=8,
                allow_custom_value=True,
            )
            refresh = gr.Button("↻ Refresh models", scale=0, min_width=150, size="md")
        system_prompt = gr.Textbox(settings.system_prompt, label="System prompt", lines=3, render=False)
        temperature = gr.Slider(0, 2, value=settings.temperature, step=0.05, label="Temperature", render=False)
        max_tokens = gr.Number(
            value=settings.max_output_tokens, minimum=1, precision=0, label="Max output tokens", render=False
        )
        chatbot = gr.Chatbot(
            label="Relay Chat",
            height="70vh",
            buttons=["copy"],
            placeholder="**Relay Chat** — ask anything. The embedded model answers with no keys and no network.",
        )
        chat = gr.ChatInterface(
            respond,
            chatbot=chatbot,
            additional_inputs=[model, system_prompt, temperature, max_tokens],
            additional_inputs_accordion="System prompt, temperature, max output tokens",
            concurrency_limit=settings.concurrency_limit,
            save_history=True,
            validator=check_message,
            api_name="chat",
            fill_height=True,
        )
        secret = runtime.history_secret()
        if secret:
            chat.saved_conversations.secret = secret
        refresh.click(refresh_models, [model], [model], api_name="refresh_models", queue=False)

        # Cooldowns end by themselves: keep the states in the menu current
        # without re-discovering (cheap, and silent when nothing changed).
        shown = gr.State([])

        def tick(previous: list):
            choices = [list(c) for c in model_choices(runtime)]
            if choices == previous:
                return gr.skip(), previous
            return gr.Dropdown(choices=[tuple(c) for c in choices]), choices

        gr.Timer(10).tick(tick, [shown], [model, shown], api_visibility="undocumented", queue=False,
                          show_progress="hidden")
        demo.load(refresh_models, [model], [model], api_visibility="undocumented", queue=False)
    demo.queue(default_concurrency_limit=settings.concurrency_limit)
    demo.max_threads = settings.max_threads
    return demo
