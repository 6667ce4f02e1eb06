"""Turn the typed event stream of one answer into chat messages.

``AnswerView`` keeps notes (which model answered and why, retries, fallbacks,
summaries) and the answer text; ``messages()`` renders them as plain message
dicts (``role``, ``content``, ``metadata``): notes first (collapsible, with a
title), the answer last. The answer text is exactly the concatenation of the
text deltas: nothing is inserted at a fallback seam, the seam is described in a
note instead.

Plain dicts, not ``gr.ChatMessage``: Gradio streams each update as a diff
against the previous one, and its diff looks inside dicts and lists but not
inside other objects. With dicts a growing answer travels as an ``append`` of
its new text; a ``ChatMessage`` would be resent whole on every update
(quadratic bytes). Every call builds fresh dicts, since Gradio keeps the
previous update by reference to diff against.

The route note (which model answers) carries the answer's live figures
(``chat.answer_stats``) in ``metadata.log`` — a short string replaced on each
update, so the answer itself still travels as appends — and ``status``
"pending" while the answer streams, "done" once it ended: a stopped answer
keeps "pending" in the browser, which is how the page knows it was cut.
Answers of the embedded model carry the ``DEMO_BADGE``; replayed answers say
"cached".
"""

from __future__ import annotations

from typing import Any

from .answer_stats import AnswerStats
from .catalogue import Catalogue
from .events import (
    ContextTrimmed,
    Event,
    FallingBack,
    Finish,
    ModelSelected,
    Progress,
    Retrying,
    SummaryInUse,
    Summarizing,
    TextDelta,
)

__all__ = ["CACHED", "CUT_TITLES", "DEMO_BADGE", "FAILED_TITLE", "LENGTH_TITLE", "STOPPED", "AnswerView"]

DEMO_BADGE = "🧪 offline demo model — limited answers"
CACHED = "⚡ cached"
STOPPED = "⏹ stopped"
FAILED_TITLE = "❌ The answer could not be completed"
LENGTH_TITLE = "✂️ The answer reached the max output tokens"
CUT_TITLES = (FAILED_TITLE, LENGTH_TITLE)  # notes of an answer that Continue may extend


class AnswerView:
    def __init__(self, catalogue: Catalogue, *, prefix: str = "", continuing: bool = False,
                 ids: str = "note", settings_shown: bool = True) -> None:
        """``prefix``: the answer so far when this view continues it (Continue);
        ``continuing`` titles the route note as a continuation; ``ids`` prefixes
        the notes' ids (unique among the notes of one answer);
        ``settings_shown``: whether the page shows its settings (not when locked),
        so a note may point at them."""
        self._catalogue = catalogue
        self._settings_shown = settings_shown
        self._text = prefix
        self._continuing = continuing
        self._ids = ids
        self.stats = AnswerStats(catalogue)
        self._parts: list[str] = []  # deltas not yet joined into _text
        self._notes: list[dict[str, object]] = []
        self._summary_note: dict[str, object] | None = None
        self._route_note: dict[str, object] | None = None
        self.model_id: str | None = None
        self.finish_reason: str | None = None
        self._tier: str | None = None
        self._switched = False
        self._failed = False
        self._progress: str | None = None

    @property
    def text(self) -> str:
        if self._parts:  # joined once per read, not once per delta
            self._text += "".join(self._parts)
            self._parts.clear()
        return self._text

    def _label(self, model_id: str) -> str:
        spec = self._catalogue.get(model_id)
        return f"{spec.label} ({model_id})" if spec else model_id

    def apply(self, event: Event) -> None:
        self.stats.apply(event)
        match event:
            case TextDelta(text=text):
                self._parts.append(text)
            case ModelSelected(model_id=model_id, tier=tier, reason=reason):
                if self.model_id is None:
                    self._tier = tier
                    self._route_note = {"title": "", "content": reason or "Chosen model."}
                elif model_id != self.model_id:
                    self._switched = True  # the same model again is a retry, not a fallback
                self.model_id = model_id
            case Retrying(model_id=model_id, attempt=attempt, delay=delay, reason=reason):
                self._notes.append({
                    "title": f"🔁 Retrying {model_id} (attempt {attempt})",
                    "content": f"{model_id} failed: {reason}. Retrying in {delay:.1f} s.",
                })
            case FallingBack(failed_model=failed, reason=reason, next_model=nxt, continuing=continuing):
                what = "continues the answer from where it stopped" if continuing else "answers instead"
                self._notes.append({
                    "title": f"⚠️ {failed} failed ({reason}) — {nxt} {what}",
                    "content": f"{self._label(failed)} failed: {reason.rstrip('.')}.\n\n{self._label(nxt)} {what}."
                    + (f"\n\nThe seam is after {len(self.text)} characters of the answer." if continuing else ""),
                })
            case Summarizing(turns=turns):
                self._summary_note = {
                    "title": "📝 Summarizing earlier conversation…",
                    "content": f"Folding {turns} older messages into a summary.",
                    "status": "pending",
                }
            case SummaryInUse(turns=turns, text=text):
                self._summary_note = {
                    "title": f"📝 Earlier conversation summarized ({turns} messages)",
                    "content": text,
                    "status": "done",
                }
            case ContextTrimmed(turns=turns, reason=reason):
                if self._summary_note is not None and self._summary_note.get("status") == "pending":
                    self._summary_note = None  # the fold did not happen; the note below says why
                self._notes.append({
                    "title": f"✂️ {turns} oldest messages left out",
                    "content": reason,
                })
            case Progress(detail=detail):
                self._progress = detail
            case Finish(reason=reason):
                self.finish_reason = reason
                if reason == "length":
                    self._notes.append({
                        "title": LENGTH_TITLE,
                        "content": "Press “⏩ Continue the answer” to extend it"
                        + (", or raise “Max output tokens” in the settings for longer answers."
                           if self._settings_shown else "."),
                    })
                elif reason == "loop":
                    self._notes.append({
                        "title": "🔁 Stopped: the model was repeating itself",
                        "content": "The answer ends where it started to loop. Ask again, or pick another model.",
                    })

    def _route_title(self) -> str:
        """Which model answered — said only once it did (or is doing so) — and
        the badges: an embedded model's answer, a cached one."""
        title = self._who()
        if any(model_id.partition(":")[0] == "local" for model_id in self._writers()):
            title += f" · {DEMO_BADGE}"
        if self.stats.cached:
            title += f" · {CACHED}"
        return title

    def _writers(self) -> tuple[str, ...]:
        return self.stats.models() or ((self.model_id,) if self.model_id else ())

    def _who(self) -> str:
        assert self.model_id is not None
        label = self._label(self.model_id)
        if self._continuing:
            if self._failed:
                return f"⏩ Continuing: tried {label} last; no model completed it"
            return f"⏩ Continued by {label}" + (" (after a fallback)" if self._switched else "")
        auto = ""
        if self._tier:
            spec = self._catalogue.get(self.model_id)
            if spec is None or spec.tier == self._tier:
                auto = f"Auto → {self._tier} tier: "
            else:  # nothing of the prompt's tier was ready; the reason says so
                auto = f"Auto → {self._tier} prompt, {spec.tier} model: "
        if self._failed:
            text = f"tried {label} last; no model completed the answer"
        elif self._switched:
            text = f"answered by {label} (after a fallback)"
        else:
            return f"🤖 {auto}{label}"
        return f"🤖 {auto}{text}" if auto else f"🤖 {text[0].upper()}{text[1:]}"

    @property
    def failed(self) -> bool:
        """The answer ended on a failure (``fail``)."""
        return self._failed

    @property
    def first_model(self) -> str | None:
        """The model whose text starts the answer (else the last one chosen)."""
        writers = self.stats.models()
        return writers[0] if writers else self.model_id

    def close(self) -> None:
        """The answer's stream is over (whatever ended it): the route note is done."""
        self.stats.end()

    def fail(self, message: str) -> None:
        self.close()
        self._failed = True
        self._notes.append({"title": FAILED_TITLE, "content": message})

    def messages(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if self._route_note is not None:
            self._route_note["title"] = self._route_title()
        notes = [n for n in (self._summary_note, self._route_note) if n] + self._notes
        if self.finish_reason is not None and not self.text.strip() and not self._failed:
            who = self._label(self.model_id) if self.model_id else "The model"
            notes.append({
                "title": "⚠️ The model returned no text",
                "content": f"{who} finished without writing anything. Send the message again, "
                           "rephrase it, or pick another model.",
            })
        elif self._progress and self.stats.first_text_at is None and not self._failed:
            notes.append({"title": "⏳ Working…", "content": self._progress, "status": "pending"})
        for index, note in enumerate(notes):
            metadata: dict[str, object] = {"title": str(note["title"]), "id": f"{self._ids}-{index}"}
            if "status" in note:
                metadata["status"] = note["status"]
            out.append({"role": "assistant", "content": str(note["content"]), "metadata": metadata})
        if self._route_note is not None:
            route = out[len([n for n in (self._summary_note,) if n])]["metadata"]
            ended = self.stats.ended_at is not None  # a Finish, or close()
            route["status"] = "done" if ended else "pending"
            if self.stats.first_text_at is not None or ended:
                route["log"] = self.stats.figures().line()
        if self.text or not out:
            out.append({"role": "assistant", "content": self.text, "metadata": {}})
        return out
