"""Small SVG charts drawn on the server: no JavaScript, no CDN, nothing fetched by the browser."""
from __future__ import annotations

from html import escape

PALETTE = {"wechat": "#2e8b57", "miniprogram": "#4682b4", "phone": "#d2691e", "rest": "#808080"}


def bar_chart(rows: list[tuple[str, float]], width: int = 520, bar_h: int = 22, unit: str = "") -> str:
    """Horizontal bars, one per (label, value)."""
    if not rows:
        return '<p class="muted">暂无数据</p>'
    top = max(v for _, v in rows) or 1
    label_w, h = 150, bar_h * len(rows) + 10
    parts = [f'<svg class="chart" role="img" width="{width}" height="{h}" viewBox="0 0 {width} {h}">']
    for i, (label, value) in enumerate(rows):
        y = 5 + i * bar_h
        w = (width - label_w - 70) * value / top
        parts.append(f'<text x="{label_w - 6}" y="{y + bar_h * 0.7:.0f}" text-anchor="end">{escape(label)}</text>'
                     f'<rect x="{label_w}" y="{y + 3}" width="{w:.1f}" height="{bar_h - 6}" fill="#4682b4"/>'
                     f'<text x="{label_w + w + 6:.1f}" y="{y + bar_h * 0.7:.0f}">{value:g}{escape(unit)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def stacked_days(days: list[str], series: dict[str, list[int]], width: int = 640, height: int = 220) -> str:
    """Conversations per day, one colour per channel, with a legend."""
    if not days:
        return '<p class="muted">暂无数据</p>'
    totals = [sum(series[k][i] for k in series) for i in range(len(days))]
    top = max(totals) or 1
    left, bottom, legend = 36, 28, 22
    plot_h = height - bottom - legend
    step = (width - left - 10) / len(days)
    parts = [f'<svg class="chart" role="img" width="{width}" height="{height}" viewBox="0 0 {width} {height}">',
             f'<text x="4" y="{legend + 10}">{top}</text><text x="4" y="{legend + plot_h}">0</text>']
    for i, day in enumerate(days):
        x, y = left + i * step, float(legend + plot_h)
        for name, values in series.items():
            h = plot_h * values[i] / top
            if h:
                y -= h
                parts.append(f'<rect x="{x + 2:.1f}" y="{y:.1f}" width="{step - 4:.1f}" height="{h:.1f}" '
                             f'fill="{PALETTE.get(name, "#999")}"><title>{escape(day)} {escape(name)}: {values[i]}</title></rect>')
        if len(days) <= 16 or i % 2 == 0:
            parts.append(f'<text x="{x + step / 2:.1f}" y="{height - 8}" text-anchor="middle" font-size="10">{escape(day[5:])}</text>')
    for j, name in enumerate(series):
        parts.append(f'<rect x="{left + j * 110}" y="4" width="12" height="12" fill="{PALETTE.get(name, "#999")}"/>'
                     f'<text x="{left + j * 110 + 16}" y="14">{escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def gauge(label: str, share: float | None) -> str:
    """A percentage as a horizontal meter."""
    if share is None:
        return f'<div class="gauge"><span>{escape(label)}</span><b>—</b></div>'
    pct = max(0.0, min(1.0, share)) * 100
    return (f'<div class="gauge"><span>{escape(label)}</span><b>{pct:.1f}%</b>'
            f'<svg width="200" height="10" viewBox="0 0 200 10"><rect width="200" height="10" fill="#eee"/>'
            f'<rect width="{pct * 2:.1f}" height="10" fill="#2e8b57"/></svg></div>')
