"""Answer cards: when questions about one topic pile up, offer the run-sheet's canned answer to field control.

A card (run-sheet `answer_cards`: 尺码, 发货, 售后, 优惠券 …) is offered once `min_questions` questions
about its topic came in within `window_s`; a direct question to the host (@主播) counts twice, because the
viewer is waiting for an answer. Field control copies it into the chat or has the host read it out.

Speed matters more here than anywhere else: the card must be on the control view within 3 s of the question
that tipped the count. The engine therefore runs this advisor on new data (`AdvisorEngine.on_data`, called
by the pipeline after each analysed batch) as well as on its tick; it only looks again when new questions
have arrived, so calling it per batch costs next to nothing.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from bot.advisors.base import Suggestion, SuggestionKind
from bot.advisors.common import TOPIC_LABELS, AdvisorMemory, make, pick_examples
from bot.scripts import RunSheet

if TYPE_CHECKING:
    from bot.config import AnswerCardsConfig
    from bot.state import RoomState


class AnswerCardAdvisor:
    def __init__(self, room: str, plan: RunSheet, cfg: AnswerCardsConfig, *, review_below: float) -> None:
        self.room = room
        self.plan = plan
        self.cfg = cfg
        self.review_below = review_below

    def advise(
        self, state: RoomState, now: int, memory: AdvisorMemory, *, only_new: bool = False
    ) -> list[Suggestion]:
        """Offer the cards whose topic is rising; `only_new` skips the work when no question arrived."""
        if not self.plan.answer_cards:
            return []
        mem = memory.cards
        asked = state.totals.confused
        if only_new:
            if asked == mem.seen_questions:
                return []
            fresh = state.latest_questions(asked - mem.seen_questions) if mem.seen_questions >= 0 else None
            mem.seen_questions = asked
            # A card that did not fire at the last look can only fire now if a question about its topic
            # came in since: busy rooms skip the window scan for batches that ask about nothing offerable.
            if fresh is not None and not self._any_offerable({q.topic for q in fresh}, memory, now):
                return []
        else:
            mem.seen_questions = asked
        questions = state.question_list(self.cfg.window_s, now)
        if not questions:
            return []
        weight: Counter[str] = Counter()
        direct: Counter[str] = Counter()
        for q in questions:
            weight[q.topic] += 2 if q.direct else 1
            direct[q.topic] += q.direct
        out: list[Suggestion] = []
        cooldown = self.cfg.cooldown_s * 1000
        for card in self.plan.answer_cards:
            n = weight.get(card.topic, 0)
            if n < self.cfg.min_questions or card.topic in mem.pending:
                continue
            if now - mem.last_offered.get(card.topic, -(10**15)) < cooldown:
                continue
            about = [q for q in questions if q.topic == card.topic]
            latest = about[-1].ts
            label = TOPIC_LABELS.get(card.topic, card.topic)
            count = len(about)
            reason = f"近{self.cfg.window_s}秒 {count} 条弹幕在问{label}"
            if direct[card.topic]:
                reason += f" (其中 {direct[card.topic]} 条 @主播)"
            reason += f", 阈值 {self.cfg.min_questions}"
            s = make(
                room=self.room, kind=SuggestionKind.ANSWER_CARD, now=now, ttl_s=self.cfg.ttl_s,
                text=f"答疑卡「{card.title}」: {card.answer}", reason=reason, key=card.topic,
                review_below=self.review_below, topic=card.topic,
                examples=pick_examples(q.text for q in reversed(about)),
                data={
                    "title": card.title,
                    "answer": card.answer,
                    "questions": count,
                    "direct": direct[card.topic],
                    "first_question_ts": about[0].ts,
                    "latest_question_ts": latest,
                    "latency_ms": now - latest,
                },
            )
            mem.pending[card.topic] = s.id
            mem.last_offered[card.topic] = now
            out.append(s)
        return out

    def _any_offerable(self, topics: set[str], memory: AdvisorMemory, now: int) -> bool:
        mem = memory.cards
        cooldown = self.cfg.cooldown_s * 1000
        return any(
            card.topic in topics and card.topic not in mem.pending
            and now - mem.last_offered.get(card.topic, -(10**15)) >= cooldown
            for card in self.plan.answer_cards
        )

    def resolved(self, memory: AdvisorMemory, s: Suggestion) -> None:
        """The card was used, dismissed or expired: its topic may get a card again after the cooldown."""
        if s.topic is not None and memory.cards.pending.get(s.topic) == s.id:
            del memory.cards.pending[s.topic]
