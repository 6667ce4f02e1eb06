"""Preview mode: what a stakeholder sees, and what they may change.

``CHAT_TITLE`` and ``CHAT_DESCRIPTION`` (markdown) head the page,
``CHAT_EXAMPLES`` offers example prompts (``|``-separated, or a file with one
per line). ``CHAT_LOCK_SETTINGS=true`` hides the model, system prompt,
temperature and max-tokens controls, and ``Preview.apply`` enforces the
configured values on every turn, whatever a request sends — the page's hidden
inputs, a crafted ``/chat`` call or the OpenAI-compatible API (which refuses a
model other than ``CHAT_DEFAULT_MODEL`` instead of silently swapping it).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from .catalogue import AUTO
from .config import Settings, is_file
from .service import Turn

__all__ = ["Preview", "parse_examples"]


def parse_examples(value: str) -> tuple[str, ...]:
    """``CHAT_EXAMPLES`` → the example prompts: a file's non-empty lines, else
    the ``|``-separated parts (blank ones dropped). A line may hold ``\\n`` for
    a line break inside an example."""
    if not value.strip():
        return ()
    if is_file(value):
        lines = Path(value.strip()).expanduser().read_text(encoding="utf-8").splitlines()
    else:
        lines = value.split("|")
    return tuple(line.strip().replace("\\n", "\n") for line in lines if line.strip())


@dataclass(frozen=True, slots=True)
class Preview:
    title: str
    description: str
    examples: tuple[str, ...]
    locked: bool
    model_id: str
    system_prompt: str
    temperature: float
    max_tokens: int

    @classmethod
    def from_settings(cls, settings: Settings) -> Preview:
        return cls(
            title=settings.title.strip() or "Relay Chat",
            description=settings.description.strip().replace("\\n", "\n"),
            examples=parse_examples(settings.examples),
            locked=settings.lock_settings,
            model_id=settings.default_model.strip() or AUTO,
            system_prompt=settings.system_prompt,
            temperature=settings.temperature,
            max_tokens=settings.max_output_tokens,
        )

    def apply(self, turn: Turn) -> Turn:
        """``turn`` with the configured model and settings when locked (as it is otherwise)."""
        if not self.locked:
            return turn
        return dataclasses.replace(turn, model_id=self.model_id, system_prompt=self.system_prompt,
                                   temperature=self.temperature, max_tokens=self.max_tokens)

    def model_problem(self, model_id: str) -> str | None:
        """Why ``model_id`` may not be asked for while locked, or None."""
        if not self.locked or model_id.strip() in (self.model_id, AUTO):
            return None  # "auto" leaves the choice to the server: the configured model
        return (f"This preview answers with {self.model_id!r} only (CHAT_LOCK_SETTINGS=true): "
                f"send \"model\": {self.model_id!r} or \"auto\", or leave it out.")
