"""How an answer's metrics are shown: one dict for both the page and the live socket."""

from __future__ import annotations

from django.template.loader import render_to_string

from core.money import format_money
from playground.models import Message


def answer_stats(answer: Message) -> dict:
    """Tokens in/out, time to first token, decode speed and cost of one answer (None where unknown)."""
    speed = answer.tokens_per_second
    return {
        "prompt_tokens": answer.prompt_tokens,
        "completion_tokens": answer.completion_tokens,
        "ttft_ms": answer.ttft_ms,
        "latency_ms": answer.latency_ms,
        "tokens_per_s": str(speed) if speed is not None else None,
        "cost": str(answer.cost) if answer.cost is not None else None,
        "currency": answer.currency,
        "cost_display": format_money(answer.cost, answer.currency, rate=True)
        if answer.cost is not None and answer.currency
        else None,
        "status": answer.status,
    }


def answer_stats_html(answer: Message) -> str:
    return render_to_string("playground/partials/stats.html", {"answer": answer, "stats": answer_stats(answer)})
