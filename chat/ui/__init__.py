"""The Gradio UI: the one boundary between Gradio's shapes and ours.

History in (browser parts or API strings, notes included) becomes ``Message``
tuples; typed events out become message dicts (notes first, answer last; see
``chat.render``).

    page      build_demo: the layout and its handlers
    convert   Gradio history → ``Message`` tuples
    updates   one answer's events → paced page updates (shared by the chat handlers)
    continuing  Continue: the last answer of a chat, settling a stopped one (server and browser)
    menu      the model menu with each model's state
"""

from .convert import history_to_messages
from .menu import model_choices
from .page import build_demo

__all__ = ["build_demo", "history_to_messages", "model_choices"]
