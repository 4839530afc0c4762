"""Small SVG charts drawn on the server: no JavaScript, no CDN, nothing fetched by the browser.
They scale to their card (a viewBox, no fixed width; console.css sets ``svg.chart`` to the card's
width), and each bar links to the conversation list filtered to what it counts."""
from __future__ import annotations

from html import escape
from typing import Callable, Optional

PALETTE = {"wechat": "#2e8b57", "miniprogram": "#4682b4", "phone": "#d2691e", "webchat": "#8a4fbf", "rest": "#808080"}


def _svg(width: float, height: float, label: str, linked: bool = False) -> str:
    """A chart's frame. One with links is a labelled group (an image may not hold links: its
    children are not announced and cannot be reached from the keyboard), one without an image."""
    role = "group" if linked else "img"
    return (f'<svg class="chart" role="{role}" aria-label="{escape(label)}" viewBox="0 0 {width:.0f} {height:.0f}" '
            f'preserveAspectRatio="xMinYMin meet">')


def _linked(href: Optional[str], inner: str) -> str:
    return f'<a href="{escape(href)}">{inner}</a>' if href else inner


def bar_chart(rows: list[tuple[str, float]], width: int = 520, bar_h: int = 22, unit: str = "",
              links: Optional[list[str]] = None, label: str = "") -> str:
    """Horizontal bars, one per (label, value); ``links`` (one per row) make each bar a link."""
    if not rows:
        return '<p class="muted">暂无数据</p>'
    top = max(v for _, v in rows) or 1
    label_w, h = min(170, width // 3), bar_h * len(rows) + 10
    parts = [_svg(width, h, label, linked=bool(links))]
    for i, (name, value) in enumerate(rows):
        y = 5 + i * bar_h
        w = (width - label_w - 70) * value / top
        parts.append(_linked(links[i] if links else None,
                             f'<text x="{label_w - 6}" y="{y + bar_h * 0.7:.0f}" text-anchor="end">{escape(name)}</text>'
                             f'<rect x="{label_w}" y="{y + 3}" width="{w:.1f}" height="{bar_h - 6}" fill="#4682b4"/>'
                             f'<text x="{label_w + w + 6:.1f}" y="{y + bar_h * 0.7:.0f}">{value:g}{escape(unit)}</text>'))
    parts.append("</svg>")
    return "".join(parts)


def stacked_days(days: list[str], series: dict[str, list[int]], width: int = 640, height: int = 220,
                 names: Optional[dict[str, str]] = None, link: Optional[Callable[[str, str], str]] = None) -> str:
    """Conversations per day, one colour per channel, with a legend (``names``: the channels as staff
    call them); ``link(day, channel)`` makes each block a link."""
    names = names or {}
    if not days:
        return '<p class="muted">暂无数据</p>'
    totals = [sum(series[k][i] for k in series) for i in range(len(days))]
    top = max(totals) or 1
    left, bottom, legend = 36, 28, 22
    plot_h = height - bottom - legend
    step = (width - left - 10) / len(days)
    parts = [_svg(width, height, "每天的对话", linked=link is not None),
             f'<text x="4" y="{legend + 10}">{top}</text><text x="4" y="{legend + plot_h}">0</text>']
    for i, day in enumerate(days):
        x, y = left + i * step, float(legend + plot_h)
        for name, values in series.items():
            h = plot_h * values[i] / top
            if h:
                y -= h
                block = (f'<rect x="{x + 2:.1f}" y="{y:.1f}" width="{step - 4:.1f}" height="{h:.1f}" '
                         f'fill="{PALETTE.get(name, "#999")}"><title>{escape(day)} {escape(names.get(name, name))}：'
                         f'{values[i]}</title></rect>')
                parts.append(_linked(link(day, name) if link else None, block))
        if len(days) <= 16 or i % 2 == 0:
            parts.append(f'<text x="{x + step / 2:.1f}" y="{height - 8}" text-anchor="middle" font-size="10">{escape(day[5:])}</text>')
    for j, name in enumerate(series):
        parts.append(f'<rect x="{left + j * 110}" y="4" width="12" height="12" fill="{PALETTE.get(name, "#999")}"/>'
                     f'<text x="{left + j * 110 + 16}" y="14">{escape(names.get(name, name))}</text>')
    parts.append("</svg>")
    return "".join(parts)


def trend(days: list[str], lines: dict[str, list[Optional[float]]], width: int = 1100, height: int = 220,
          colours: Optional[dict[str, str]] = None, link: Optional[Callable[[str, str], str]] = None) -> str:
    """Shares per day (0–1) as lines, one per name, with a legend; a day with no conversations has no
    point. ``link(day, name)`` makes each point a link to what it counts."""
    if not days or not any(v is not None for values in lines.values() for v in values):
        return '<p class="muted">暂无数据</p>'
    colours = colours or {}
    left, bottom, legend = 44, 28, 22
    plot_h, step = height - bottom - legend, (width - left - 10) / len(days)
    parts = [_svg(width, height, "每天的比率", linked=link is not None),
             f'<text x="4" y="{legend + 10}">100%</text><text x="4" y="{legend + plot_h}">0%</text>',
             f'<line x1="{left}" y1="{legend + plot_h}" x2="{width - 10}" y2="{legend + plot_h}" stroke="#999"/>']
    for j, (name, values) in enumerate(lines.items()):
        colour = colours.get(name, "#4682b4")
        points = [(left + (i + 0.5) * step, legend + plot_h * (1 - v), day, v)
                  for i, (day, v) in enumerate(zip(days, values)) if v is not None]
        if len(points) > 1:
            parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="'
                         + " ".join(f"{x:.1f},{y:.1f}" for x, y, _, _ in points) + '"/>')
        for x, y, day, v in points:
            dot = (f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{colour}"><title>{escape(day)} '
                   f'{escape(name)}：{v * 100:.0f}%</title></circle>')
            parts.append(_linked(link(day, name) if link else None, dot))
        parts.append(f'<rect x="{left + j * 150}" y="4" width="12" height="12" fill="{colour}"/>'
                     f'<text x="{left + j * 150 + 16}" y="14">{escape(name)}</text>')
    for i, day in enumerate(days):
        if len(days) <= 16 or i % 2 == 0:
            parts.append(f'<text x="{left + (i + 0.5) * step:.1f}" y="{height - 8}" text-anchor="middle" '
                         f'font-size="10">{escape(day[5:])}</text>')
    parts.append("</svg>")
    return "".join(parts)


def gauge(label: str, share: float | None, href: Optional[str] = None) -> str:
    """A percentage as a horizontal meter; ``href``: the conversations it counts."""
    title = f'<a href="{escape(href)}">{escape(label)}</a>' if href else escape(label)
    if share is None:
        return f'<div class="gauge"><span>{title}</span><b>—</b></div>'
    pct = max(0.0, min(1.0, share)) * 100
    return (f'<div class="gauge"><span>{title}</span><b>{pct:.1f}%</b>'
            f'<svg class="meter" viewBox="0 0 200 10" preserveAspectRatio="none"><rect width="200" height="10" fill="#eee"/>'
            f'<rect width="{pct * 2:.1f}" height="10" fill="#2e8b57"/></svg></div>')
