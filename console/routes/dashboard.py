"""The dashboard: conversations per day by channel, the daily hand-off and not-understood rates,
key shares, ratings and the commonest intents, each chart linked to the list it counts."""
from __future__ import annotations

import asyncio
import datetime as dt
from collections import Counter
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import func, select
from sqlalchemy.orm import sessionmaker

from console import charts
from console.auth import Staff
from console.conversations import CHANNELS
from console.labels import intent_label
from console.web import CHANNEL_NAMES, page, sessions_of, small_number, staff, sync
from services.models import ConversationSummary, FeedbackTicket, Rating

router = APIRouter()


@router.get("/")
async def dashboard(request: Request, who: Staff = Depends(staff), days: str = "14") -> HTMLResponse:
    days_n = max(1, min(small_number(days or "14", "days"), 90))
    await sync(request.app)
    data = await asyncio.to_thread(dashboard_data, sessions_of(request), days_n)
    return page(request, "dashboard.html", who, days=days_n, **data)


def dashboard_data(sessions: sessionmaker, days: int) -> dict[str, Any]:
    since = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=days)
    with sessions() as s:
        rows = s.execute(select(ConversationSummary.started_at, ConversationSummary.channel, ConversationSummary.handoff,
                                ConversationSummary.fallback, ConversationSummary.intents)
                         .where(ConversationSummary.started_at >= since)).all()
        ratings = s.execute(select(Rating.score, func.count()).where(Rating.created_at >= since)
                            .group_by(Rating.score)).all()
        due = s.execute(select(FeedbackTicket.status, FeedbackTicket.due_date, FeedbackTicket.updated_at)
                        .where(FeedbackTicket.due_date >= since.date(), FeedbackTicket.due_date <= dt.date.today())).all()
    tz = dt.timezone(dt.timedelta(hours=8))
    day_list = [(dt.datetime.now(tz).date() - dt.timedelta(days=n)).isoformat() for n in range(days - 1, -1, -1)]
    series = {c: [0] * len(day_list) for c in CHANNELS}
    position = {d: i for i, d in enumerate(day_list)}
    intents: Counter[str] = Counter()
    per_day, handed, not_understood = [0] * len(day_list), [0] * len(day_list), [0] * len(day_list)
    for started, channel, handoff, fallback, names in rows:
        started = started if started.tzinfo else started.replace(tzinfo=dt.timezone.utc)
        day = started.astimezone(tz).date().isoformat()
        if day in position:
            per_day[position[day]] += 1
            handed[position[day]] += bool(handoff)
            not_understood[position[day]] += bool(fallback)
            if channel in series:
                series[channel][position[day]] += 1
        intents.update(n for n in names.split() if n not in ("greet", "nlu_fallback"))
    trend_flags = {"转人工的对话": "handoff", "没听懂的对话": "fallback"}
    n = len(rows)
    scored = sum(c for _, c in ratings)
    on_time = sum(1 for status, due_date, updated in due
                  if status in ("resolved", "closed") and (updated.date() if updated else due_date) <= due_date)
    return {
        "conversations": n,
        # Drawn at about the size they are shown (a full-width card; a third of it), so text stays readable.
        "per_day": charts.stacked_days(day_list, series, width=1100, height=260, names=CHANNEL_NAMES,
                                       link=lambda day, channel: "/conversations?" + urlencode(
                                           {"channel": channel, "date_from": day, "date_to": day})),
        "trend": charts.trend(day_list, {
            "转人工的对话": [h / t if t else None for h, t in zip(handed, per_day)],
            "没听懂的对话": [f / t if t else None for f, t in zip(not_understood, per_day)]},
            colours={"转人工的对话": "#d2691e", "没听懂的对话": "#b22222"},
            link=lambda day, name: "/conversations?" + urlencode(
                {"flag": trend_flags[name], "date_from": day, "date_to": day})),
        "containment": charts.gauge("自助办结率（未转人工）", (n - sum(1 for r in rows if r[2])) / n if n else None,
                                    "/conversations?flag=handoff"),
        "fallback": charts.gauge("没听懂的对话占比", sum(1 for r in rows if r[3]) / n if n else None,
                                 "/conversations?flag=fallback"),
        "satisfaction": charts.gauge("满意度（4-5 分占比）",
                                     sum(c for sc, c in ratings if sc >= 4) / scored if scored else None),
        "mean_rating": (sum(sc * c for sc, c in ratings) / scored) if scored else None,
        "ratings": charts.bar_chart([(f"{sc} 分", c) for sc, c in sorted(ratings, reverse=True)],
                                    links=[f"/conversations?rating={sc}" for sc, _ in sorted(ratings, reverse=True)],
                                    label="评分分布", width=380),
        "on_time": charts.gauge("工单按期办结率", on_time / len(due) if due else None),
        "top_intents": charts.bar_chart([(intent_label(name).split(" · ")[0], count)
                                         for name, count in intents.most_common(10)],
                                        links=[f"/conversations?intent={name}" for name, _ in intents.most_common(10)],
                                        label="最常见的意图", width=380),
    }
