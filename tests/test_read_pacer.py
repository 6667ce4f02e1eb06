"""The shared read budget: alone a body is read every READ_GAP; many bodies
streaming at once share the reads, up to MAX_READ_GAP between two reads."""

from __future__ import annotations

from contextlib import ExitStack

from chat.providers.body import MAX_READ_GAP, READ_GAP, ReadPacer


def test_one_stream_reads_at_the_minimum_gap() -> None:
    pacer = ReadPacer(reads_per_s=400)
    with pacer.streaming():
        assert pacer.gap() == READ_GAP


def test_many_streams_share_the_reads_and_the_gap_is_capped() -> None:
    pacer = ReadPacer(reads_per_s=400)
    gaps = []
    with ExitStack() as bodies:
        for _ in range(41):  # bodies start streaming, one after the other
            bodies.enter_context(pacer.streaming())
            gaps.append(pacer.gap())
    assert gaps == sorted(gaps), "more streams never read more often"
    assert gaps[-1] == MAX_READ_GAP and gaps[0] == READ_GAP
    assert gaps[10] == 11 / 400  # 11 streams share 400 reads a second


def test_a_body_that_ended_no_longer_counts() -> None:
    pacer = ReadPacer()
    with pacer.streaming():
        with pacer.streaming():
            assert pacer.streams == 2
        assert pacer.streams == 1
    assert pacer.streams == 0


def test_while_an_answer_opens_the_streaming_ones_read_at_the_longest_gap() -> None:
    pacer = ReadPacer(reads_per_s=400)
    with pacer.streaming():
        with pacer.opening() as opening:
            assert pacer.gap() == MAX_READ_GAP, "a new request's first token goes first"
            opening.first_text()
            assert pacer.gap() == READ_GAP, "its first text came: no one is held back"
            opening.first_text()  # told twice: counted once
            assert pacer.opening_now == 0
        with pacer.opening(), pacer.opening():
            assert pacer.opening_now == 2
        assert pacer.opening_now == 0 and pacer.gap() == READ_GAP, "answers that ended without text"
