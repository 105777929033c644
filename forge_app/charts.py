"""Usage charts as server-rendered inline SVG (issue 11 §1): no script, so the CSP holds.

    >>> chart = bar_chart("Calls", [(datetime(2026, 1, 1, 12, tzinfo=UTC), 4.0)], unit="calls")
    >>> "<title" in str(chart.svg) and 'role="img"' in str(chart.svg)
    True

Each chart is an ``<svg role="img">`` with a ``<title>`` and ``<desc>`` (the summary a screen
reader reads), axis labels (the highest value, zero, the first and last time) and the same
numbers in a visually hidden table rendered by ``releases/_usage_chart.html``. Colours are SVG
presentation attributes (not ``style``), which ``style-src 'self'`` allows.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from markupsafe import Markup, escape

from forge_app.usage_reads import UsageBucket

__all__ = ["Chart", "UsagePanel", "bar_chart", "line_chart", "usage_panel"]

WIDTH, HEIGHT = 320, 120
LEFT, RIGHT, TOP, BOTTOM = 44, 8, 10, 22
COLOURS = ("#2f6fbd", "#c2572b")
_ids = itertools.count(1)


@dataclass
class Chart:
    """One chart: its SVG and, for the hidden table, its rows ``(time, values…)``."""

    title: str
    svg: Markup
    summary: str
    series_names: list[str]
    rows: list[tuple[str, list[str]]] = field(default_factory=list)


def _fmt(value: float, unit: str) -> str:
    if unit == "%":
        return f"{value:.1f}%"
    if value >= 1_000_000:
        return f"{value / 1_000_000:.1f}M"
    if value >= 10_000:
        return f"{value / 1000:.0f}k"
    return f"{value:.0f}" if value == int(value) else f"{value:.1f}"


def _time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%H:%M")


def _frame(
    title: str, summary: str, top: float, unit: str, first: datetime, last: datetime, body: str
) -> Markup:
    n = next(_ids)
    ident = f"chart-{n}-{uuid.uuid4().hex[:6]}"
    bottom_y = HEIGHT - BOTTOM
    parts = [
        f'<svg class="usage-chart" role="img" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="{WIDTH}" height="{HEIGHT}" aria-labelledby="{ident}-t {ident}-d">',
        f'<title id="{ident}-t">{escape(title)}</title>',
        f'<desc id="{ident}-d">{escape(summary)}</desc>',
        f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{bottom_y}" stroke="#888" />',
        f'<line x1="{LEFT}" y1="{bottom_y}" x2="{WIDTH - RIGHT}" y2="{bottom_y}" stroke="#888" />',
        f'<text x="{LEFT - 4}" y="{TOP + 8}" text-anchor="end" font-size="10" fill="currentColor">'
        f"{escape(_fmt(top, unit))}</text>",
        f'<text x="{LEFT - 4}" y="{bottom_y}" text-anchor="end" font-size="10" '
        'fill="currentColor">0</text>',
        f'<text x="{LEFT}" y="{HEIGHT - 6}" font-size="10" fill="currentColor">'
        f"{escape(_time(first))}</text>",
        f'<text x="{WIDTH - RIGHT}" y="{HEIGHT - 6}" text-anchor="end" font-size="10" '
        f'fill="currentColor">{escape(_time(last))} UTC</text>',
        body,
        "</svg>",
    ]
    return Markup("".join(parts))  # noqa: S704 (every text part above is escaped)


def _x(index: int, count: int) -> float:
    span = WIDTH - LEFT - RIGHT
    return LEFT + (span * (index + 0.5) / count if count else 0)


def _y(value: float, top: float) -> float:
    span = HEIGHT - TOP - BOTTOM
    return HEIGHT - BOTTOM - (span * value / top if top else 0)


def bar_chart(title: str, points: list[tuple[datetime, float]], *, unit: str) -> Chart:
    """Bars of one series over time."""
    top = max((v for _, v in points), default=0.0) or 1.0
    count = len(points)
    width = max(1.0, (WIDTH - LEFT - RIGHT) / max(count, 1) * 0.8)
    bars = "".join(
        f'<rect x="{_x(i, count) - width / 2:.1f}" y="{_y(v, top):.1f}" width="{width:.1f}" '
        f'height="{HEIGHT - BOTTOM - _y(v, top):.1f}" fill="{COLOURS[0]}">'
        f"<title>{escape(_time(t))}: {escape(_fmt(v, unit))} {escape(unit)}</title></rect>"
        for i, (t, v) in enumerate(points)
    )
    total = sum(v for _, v in points)
    summary = _summary(title, points, f"{_fmt(total, unit)} {unit} in all")
    first, last = _ends(points)
    return Chart(
        title,
        _frame(title, summary, top, unit, first, last, bars),
        summary,
        [title],
        [(_time(t), [_fmt(v, unit)]) for t, v in points],
    )


def line_chart(
    title: str,
    series: dict[str, list[tuple[datetime, float | None]]],
    *,
    unit: str,
) -> Chart:
    """One line per series (gaps where a value is None), over the same times."""
    names = list(series)
    times = sorted({t for values in series.values() for t, _ in values})
    values = {name: dict(series[name]) for name in names}
    top = max((v for s in values.values() for v in s.values() if v is not None), default=0.0)
    top = top or 1.0
    count = len(times)
    body = []
    for colour, name in zip(itertools.cycle(COLOURS), names, strict=False):
        coords = [
            f"{_x(i, count):.1f},{_y(v, top):.1f}"
            for i, t in enumerate(times)
            if (v := values[name].get(t)) is not None
        ]
        if coords:
            body.append(
                f'<polyline points="{" ".join(coords)}" fill="none" stroke="{colour}" '
                f'stroke-width="2"><title>{escape(name)}</title></polyline>'
            )
    if len(names) > 1:
        for i, (colour, name) in enumerate(zip(itertools.cycle(COLOURS), names, strict=False)):
            x = LEFT + 8 + i * 110
            body.append(
                f'<rect x="{x}" y="{TOP}" width="10" height="4" fill="{colour}" />'
                f'<text x="{x + 14}" y="{TOP + 5}" font-size="10" fill="currentColor">'
                f"{escape(name)}</text>"
            )
    parts = []
    for name in names:
        known = [v for v in values[name].values() if v is not None]
        if known:
            parts.append(f"{name} from {_fmt(min(known), unit)} to {_fmt(max(known), unit)}")
    first, last = _ends([(t, 0.0) for t in times])
    summary = _summary(title, [(t, 0.0) for t in times], "; ".join(parts) or "no data")
    rows = [
        (
            _time(t),
            [
                "—" if values[name].get(t) is None else _fmt(values[name][t] or 0.0, unit)
                for name in names
            ],
        )
        for t in times
    ]
    return Chart(
        title, _frame(title, summary, top, unit, first, last, "".join(body)), summary, names, rows
    )


def _ends(points: list[tuple[datetime, float]]) -> tuple[datetime, datetime]:
    if not points:
        now = datetime.now(UTC)
        return now, now
    return points[0][0], points[-1][0]


def _summary(title: str, points: list[tuple[datetime, float]], detail: str) -> str:
    if not points:
        return f"{title}: no data yet."
    first, last = _ends(points)
    return f"{title}, {_time(first)} to {_time(last)} UTC, {len(points)} intervals: {detail}."


@dataclass
class UsagePanel:
    """The charts of one page: calls, error rate, tokens in and out."""

    charts: list[Chart]
    calls: int
    errors: int
    empty: bool


def usage_panel(buckets: Iterable[UsageBucket], *, hours: int = 24) -> UsagePanel:
    """Charts of ``buckets`` summed per time bucket (every prompt and content together)."""
    per: dict[datetime, list[float]] = {}
    for b in buckets:
        row = per.setdefault(b.bucket_start, [0, 0, 0, 0, 0, 0])
        row[0] += b.renders
        row[1] += b.calls
        row[2] += b.render_errors + b.call_errors
        row[3] += b.input_tokens
        row[4] += b.output_tokens
    times = sorted(per)
    if times:
        cutoff = times[-1] - timedelta(hours=hours)
        times = [t for t in times if t >= cutoff]
    calls = [(t, float(max(per[t][0], per[t][1]))) for t in times]
    rate: list[tuple[datetime, float | None]] = []
    for t in times:
        uses = per[t][0] + per[t][1]
        rate.append((t, 100.0 * per[t][2] / uses if uses else None))
    charts = [
        bar_chart("Calls", calls, unit="calls"),
        line_chart("Error rate", {"Error rate": rate}, unit="%"),
        line_chart(
            "Tokens in and out",
            {
                "Input tokens": [(t, float(per[t][3])) for t in times],
                "Output tokens": [(t, float(per[t][4])) for t in times],
            },
            unit="tokens",
        ),
    ]
    return UsagePanel(
        charts,
        int(sum(v for _, v in calls)),
        int(sum(per[t][2] for t in times)),
        not times,
    )
