"""The model menu: every model with its state, and the help line under it."""

from __future__ import annotations

import time

from ..catalogue import AUTO
from ..runtime import Runtime

__all__ = ["MODEL_INFO", "model_choices", "model_info"]

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
