"""The page: a ChatInterface driven by an async generator, the model menu and
its refresh, settings in an accordion, a header and example prompts (preview
mode), and Continue for a cut answer.

Handlers turn Gradio's inputs into a ``Turn`` (``convert``; the settings lock
applied by ``Preview.apply``, so a crafted ``/chat`` call cannot change what
the page hides), stream the service's answer as page updates (``updates``) and
keep the menu current (``menu``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import gradio as gr
from gradio.context import Context
from gradio.events import EventListener

from ..access import Identity, Pass
from ..catalogue import AUTO
from ..render import AnswerView
from ..runtime import Runtime
from ..service import Turn
from ..streaming import Pacer
from .access import admit_page
from .continuing import CLEAR_JS, STOP_JS, VISIBILITY_JS, last_answer, settle
from .convert import content_text, history_to_messages
from .menu import MODEL_INFO, model_choices, model_info
from .updates import answer_updates, count_answer

__all__ = ["LATEX", "build_demo"]

# $$…$$ and \[…\] on a line of their own, $…$ and \(…\) inline (KaTeX, rendered while streaming too).
LATEX = [
    {"left": "$$", "right": "$$", "display": True},
    {"left": "\\[", "right": "\\]", "display": True},
    {"left": "$", "right": "$", "display": False},
    {"left": "\\(", "right": "\\)", "display": False},
]

CSS = """
#relay-header { padding: 0.25rem 0.5rem 0; }
#relay-header h1 { margin: 0 0 0.25rem; font-size: 1.6rem; }
#relay-header p { margin: 0.2rem 0; color: var(--body-text-color-subdued); }
#relay-continue { align-self: center; width: auto; min-width: 14rem; margin-top: 0.25rem; }
"""


def build_demo(runtime: Runtime) -> gr.Blocks:
    settings = runtime.settings
    service = runtime.service
    preview = runtime.preview
    locked = preview.locked
    pacer = Pacer(settings.stream_interval_ms / 1000)
    proxies = runtime.access.proxies
    metrics = runtime.metrics

    def turn_from(message: str, history: list[Any], model_id: str | None, system_prompt: str | None,
                  temperature: float | None, max_tokens: float | None, *, answer_so_far: str = "") -> Turn:
        return preview.apply(Turn(
            message=message,
            history=history_to_messages(history),
            model_id=(model_id or AUTO).strip(),
            system_prompt=system_prompt if system_prompt is not None else settings.system_prompt,
            temperature=temperature,
            max_tokens=int(max_tokens) if max_tokens else None,
            answer_so_far=answer_so_far,
        ))

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
            metrics.page_answer("none", "refused", None)
            yield refusal
            return
        turn = turn_from(message if isinstance(message, str) else content_text(message), history,
                         model_id, system_prompt, temperature, max_tokens)
        view = AnswerView(runtime.router.catalogue, settings_shown=not locked)
        async with aclosing(answer_turn(identity, ticket, turn, view)) as updates:
            async for update in updates:
                yield update

    async def answer_turn(identity: Identity, ticket: Pass, turn: Turn, view: AnswerView):
        """The page updates of one admitted answer (its cost booked by the gate,
        the answer counted in the metrics); its stream lease is freed when it
        ends. Closed at once when the page goes away or Stop is pressed, so the
        provider stream closes with it."""
        events = runtime.gate.metered(identity, service.respond(turn))
        outcome = "stopped"  # unless it ends by itself
        metrics.page_active.inc()
        try:
            async with aclosing(answer_updates(events, runtime.router.catalogue, pacer, view=view)) as updates:
                async for update in updates:
                    yield update
            outcome = "failed" if view.failed else "ok"
        except gr.Error:
            outcome = "bad_request"
            raise
        except Exception:
            outcome = "internal_error"
            raise
        finally:
            metrics.page_active.dec()
            count_answer(metrics, view, outcome)
            await ticket.release()

    async def continue_answer(
        history: list[Any] | None,
        model_id: str | None,
        system_prompt: str | None,
        temperature: float | None,
        max_tokens: float | None,
        request: gr.Request | None,
    ):
        """Extend the last answer in place: the same message grows, through the
        continuation path (its seam), with a note saying who continued it.
        The same limits as a new message (a refusal is a note under it)."""
        history = settle(history or []) or list(history or [])
        answer = last_answer(history)
        if answer is None:
            raise gr.Error("There is no answer to continue: send a message first.", title="Nothing to continue")
        identity, ticket, refusal = await admit_page(runtime, request, proxies)
        if refusal is not None:
            metrics.page_answer("none", "refused", None)
            yield [*history, *refusal]
            return
        message = content_text(history[answer.user].get("content"))
        turn = turn_from(message, history[:answer.user], model_id, system_prompt, temperature, max_tokens,
                         answer_so_far=answer.text)
        view = AnswerView(runtime.router.catalogue, prefix=answer.text, continuing=True,
                          ids=f"continued{answer.continuations + 1}", settings_shown=not locked)
        head = [*history[:answer.user + 1], *answer.notes]
        async with aclosing(answer_turn(identity, ticket, turn, view)) as updates:
            async for update in updates:
                yield [*head, *update]

    async def continue_page(
        history: list[Any] | None,
        model_id: str | None,
        system_prompt: str | None,
        temperature: float | None,
        max_tokens: float | None,
        request: gr.Request,
    ):
        # A raised error would end Gradio's chain after this event (the textbox
        # would keep its stop button): a toast says what went wrong instead.
        try:
            async with aclosing(continue_answer(history, model_id, system_prompt, temperature, max_tokens,
                                                request)) as updates:
                async for update in updates:
                    yield update
        except gr.Error as exc:
            gr.Warning(exc.message, title=exc.title)

    async def continue_api(
        history: list[dict[str, Any]],
        model: str = settings.default_model,
        system_prompt: str = settings.system_prompt,
        temperature: float = settings.temperature,
        max_tokens: int = settings.max_output_tokens,
        request: gr.Request | None = None,
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Continue the last answer of ``history`` (the user's messages and what
        /chat returned, in order; content as text or text parts). Streams the
        conversation with that answer extended in place: nothing repeated, a
        note "⏩ Continued by …" added."""
        async with aclosing(continue_answer(history, model, system_prompt, temperature, max_tokens,
                                            request)) as updates:
            async for update in updates:
                yield update

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

    with gr.Blocks(title=preview.title, fill_height=True) as demo:
        header = f"# {preview.title}" + (f"\n\n{preview.description}" if preview.description else "")
        gr.Markdown(header, elem_id="relay-header", latex_delimiters=LATEX)
        with gr.Row(visible=not locked):
            model = gr.Dropdown(
                choices=model_choices(runtime),
                value=settings.default_model,
                label="Model",
                info=MODEL_INFO,
                scale=8,
                allow_custom_value=True,
            )
            refresh = gr.Button("↻ Refresh models", scale=0, min_width=150, size="md")
        # Locked: rendered hidden here (so no settings accordion is drawn); the
        # values they send are replaced by the configured ones anyway.
        hidden = {"render": False} if not locked else {"visible": False}
        system_prompt = gr.Textbox(settings.system_prompt, label="System prompt", lines=3, **hidden)
        temperature = gr.Slider(0, 2, value=settings.temperature, step=0.05, label="Temperature", **hidden)
        max_tokens = gr.Number(
            value=settings.max_output_tokens, minimum=1, precision=0, label="Max output tokens", **hidden
        )
        chatbot = gr.Chatbot(
            label=preview.title,
            height="62vh" if not locked else "66vh",
            buttons=["copy"],
            latex_delimiters=LATEX,
            placeholder=f"**{preview.title}** — ask anything."
            + ("" if locked else " The embedded model answers with no keys and no network."),
        )
        chat = _ChatInterface(
            respond,
            chatbot=chatbot,
            additional_inputs=[model, system_prompt, temperature, max_tokens],
            additional_inputs_accordion=gr.Accordion("System prompt, temperature, max output tokens", open=False,
                                                     render=False),
            # Shown in the empty chat; a click sends one with the current settings.
            examples=[[example, None, None, None, None] for example in preview.examples] or None,
            cache_examples=False,  # Spaces would otherwise run every example through a model at start
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
        _wire_continue(chat, [model, system_prompt, temperature, max_tokens], continue_page)
        # The API's Continue takes the conversation as plain JSON (the Chatbot's
        # own input would insist on the browser's shape of every message).
        gr.api(continue_api, api_name="continue", concurrency_limit=settings.concurrency_limit)

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
    demo.relay_css = CSS  # type: ignore[attr-defined]  # applied by chat.serve.launch (Gradio 6 takes css at launch)
    return demo


class _ChatInterface(gr.ChatInterface):
    """A ChatInterface with the Continue button right under its textbox.

    (Gradio offers no slot there; this renders it at the end of the interface's
    chat area, the one place between the textbox and the settings.)"""

    continue_button: gr.Button

    def _render_chatbot_area(self, *args: Any, **kwargs: Any) -> None:
        super()._render_chatbot_area(*args, **kwargs)
        self.continue_button = gr.Button("⏩ Continue the answer", visible=False, size="sm", variant="secondary",
                                         elem_id="relay-continue")

    def _setup_events(self) -> None:
        super()._setup_events()
        if self.examples and self.save_history:
            self._save_example_chats()

    def _save_example_chats(self) -> None:
        """Save a chat started from an example, as a typed one is.

        Gradio's example chain (click → answer → keep the chat's state) ends
        without the save its submit and retry chains end with, so a chat
        begun with an example never reaches the saved chats. The save is
        chained after that last step here; if Gradio's chain ever looks
        different, nothing is added (the browser test notices)."""
        fns = (Context.root_block or self).default_config.fns  # the events of the page being built
        step = next((f for f in fns.values() if f.fn == self.example_clicked), None)
        state_ids = [self.chatbot_state._id, self.chatbot_value._id]
        while step is not None:
            following = [f for f in fns.values() if f.trigger_after == step._id]
            synced = next((f for f in following if [o._id for o in f.outputs] == state_ids), None)
            if synced is not None:
                then = EventListener("then", trigger_after=synced._id, trigger_only_on_success=False,
                                     trigger_only_on_failure=False, has_trigger=False).listener
                then(self.chatbot, self._save_conversation,
                     [self.conversation_id, self.chatbot_state, self.saved_conversations],
                     [self.conversation_id, self.saved_conversations], api_visibility="undocumented", queue=False)
                return
            step = next((f for f in following if f.name == "_submit_fn"), following[0] if following else None)


def _wire_continue(chat: _ChatInterface, settings_inputs: list[gr.Component], handler: Any) -> None:
    """The Continue button under the chat, shown while the last answer is cut.

    Whether it shows is decided in the browser (``continuing.VISIBILITY_JS``
    on every change of the chat: no server round trip per streamed update);
    Stop settles the stopped answer's notes there too (``STOP_JS``: its spinner
    stops, its title says "stopped"). (Gradio's queue=False events trigger no
    State change listener, so no server hook after a turn could do it.) Stop cancels a
    continuation like an answer. (The API's ``/continue`` is the ``gr.api``
    endpoint declared in ``build_demo``.)
    """
    chatbot, textbox, state, button = chat.chatbot, chat.textbox, chat.chatbot_state, chat.continue_button
    quiet: dict[str, Any] = {"api_visibility": "undocumented", "queue": False, "show_progress": "hidden"}
    chatbot.change(None, [chatbot], [chatbot, button], js=VISIBILITY_JS, **quiet)
    textbox.stop(None, [chatbot], [chatbot, button], js=STOP_JS, **quiet)
    for trigger in (textbox.submit, chatbot.retry, chatbot.edit, chatbot.example_select, chatbot.option_select,
                    button.click):
        trigger(None, None, None, js=CLEAR_JS, **quiet)

    def save(conversation_id: Any, history: list[Any], saved: list[Any]):
        return chat._save_conversation(conversation_id, history, saved)  # the interface's own save

    started = button.click(
        lambda: (gr.Button(visible=False), gr.Textbox(submit_btn=False, stop_btn=True, interactive=False)),
        None, [button, textbox], api_visibility="undocumented", queue=False,
    )
    streamed = started.then(handler, [chatbot, *settings_inputs], [chatbot], api_visibility="undocumented",
                            concurrency_limit=chat.concurrency_limit, show_progress="hidden")
    # As the interface does after an answer: keep its state and saved chats in step.
    streamed.then(lambda h: h, [chatbot], [state], api_visibility="undocumented", queue=False).then(
        lambda: gr.Textbox(submit_btn=True, stop_btn=False, interactive=True), None, [textbox],
        api_visibility="undocumented", queue=False,
    ).then(save, [chat.conversation_id, state, chat.saved_conversations],
           [chat.conversation_id, chat.saved_conversations], api_visibility="undocumented", queue=False)
    textbox.stop(None, None, None, cancels=[streamed], api_visibility="undocumented")
