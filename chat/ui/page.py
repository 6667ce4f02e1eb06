"""The page: a ChatInterface driven by an async generator, the model menu and
its refresh, settings in an accordion.

Handlers turn Gradio's inputs into a ``Turn`` (``convert``), stream the
service's answer as page updates (``updates``) and keep the menu current
(``menu``).
"""

from __future__ import annotations

from contextlib import aclosing
from typing import Any

import gradio as gr

from ..access import TrustedProxies
from ..catalogue import AUTO
from ..runtime import Runtime
from ..service import Turn
from ..streaming import Pacer
from .access import admit_page
from .convert import content_text, history_to_messages
from .menu import MODEL_INFO, model_choices, model_info
from .updates import answer_updates

__all__ = ["build_demo"]


def build_demo(runtime: Runtime) -> gr.Blocks:
    settings = runtime.settings
    service = runtime.service
    pacer = Pacer(settings.stream_interval_ms / 1000)
    proxies = TrustedProxies(settings.trusted_proxies)

    async def respond(
        message: str,
        history: list[Any],
        model_id: str | None,
        system_prompt: str | None,
        temperature: float | None,
        max_tokens: float | None,
        request: gr.Request,
    ):
        # Limits at the edge, as for the API: a refusal is a note in the chat.
        identity, ticket, refusal = await admit_page(runtime, request, proxies)
        if refusal is not None:
            yield refusal
            return
        turn = Turn(
            message=message if isinstance(message, str) else content_text(message),
            history=history_to_messages(history),
            model_id=(model_id or AUTO).strip(),
            system_prompt=system_prompt if system_prompt is not None else settings.system_prompt,
            temperature=temperature,
            max_tokens=int(max_tokens) if max_tokens else None,
        )
        # Closed at once when the page goes away or Stop is pressed, so the
        # provider stream closes with it.
        events = runtime.gate.metered(identity, service.respond(turn))
        try:
            async with aclosing(answer_updates(events, runtime.router.catalogue, pacer)) as updates:
                async for update in updates:
                    yield update
        finally:
            await ticket.release()

    def check_message(message: Any, *_: Any):
        # Runs before the textbox is cleared, so a refused message stays where
        # the user typed it. The /chat API path is checked by the service.
        problem = service.message_problem(message if isinstance(message, str) else content_text(message))
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
