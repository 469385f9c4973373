"""Small, dependency-free SVG charts: a line chart (training loss over steps) and a scatter
with error bars (accuracy against cost per request, one point per variant).

Plain strings out, so a browser, an `<img>` tag or a Markdown file shows them as they are.
Every text that comes from a user (variant names) is escaped.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass
from xml.sax.saxutils import escape

WIDTH, HEIGHT = 720, 400
LEFT, RIGHT, TOP, BOTTOM = 70, 30, 50, 60  # margins around the plotting area
COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2"]
FONT = 'font-family="sans-serif" font-size="12"'


@dataclass(frozen=True)
class Point:
    label: str
    x: float
    y: float
    y_low: float | None = None  # error bar, when known
    y_high: float | None = None
    note: str = ""  # shown after the label


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values (1, 2, 2.5 or 5 times a power of ten) covering [low, high]."""
    if not math.isfinite(low) or not math.isfinite(high):
        return [0.0, 1.0]
    if high <= low:
        high = low + (abs(low) or 1.0)
    raw = (high - low) / max(1, count)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first = math.floor(low / step) * step
    ticks = []
    value = first
    while value <= high + step * 1e-9:
        ticks.append(round(value, 10))
        value += step
    if ticks[-1] < high:
        ticks.append(round(value, 10))
    return ticks


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def fit(text: str, width_px: float, char_px: float = 7.0) -> str:
    """`text`, shortened in the middle with an ellipsis to about `width_px` pixels (SVG has no
    text measurement; 7 px per character is generous for 12 px sans-serif)."""
    room = max(5, int(width_px / char_px))
    if len(text) <= room:
        return text
    head = (room - 1) // 2
    return text[:head] + "…" + text[len(text) - (room - 1 - head) :]


class _Frame:
    """Maps data coordinates into the plotting area and draws the axes."""

    def __init__(self, xs: Sequence[float], ys: Sequence[float]) -> None:
        self.x_ticks = nice_ticks(min(xs), max(xs))
        self.y_ticks = nice_ticks(min(ys), max(ys))
        self.x0, self.x1 = self.x_ticks[0], self.x_ticks[-1]
        self.y0, self.y1 = self.y_ticks[0], self.y_ticks[-1]

    def px(self, x: float) -> float:
        span = (self.x1 - self.x0) or 1.0
        return LEFT + (x - self.x0) / span * (WIDTH - LEFT - RIGHT)

    def py(self, y: float) -> float:
        span = (self.y1 - self.y0) or 1.0
        return HEIGHT - BOTTOM - (y - self.y0) / span * (HEIGHT - TOP - BOTTOM)

    def axes(self, x_label: str, y_label: str) -> list[str]:
        out = []
        for t in self.y_ticks:
            y = self.py(t)
            out.append(
                f'<line x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" y2="{y:.1f}" '
                'stroke="#e5e5e5"/>'
            )
            out.append(
                f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" {FONT}>{_fmt(t)}</text>'
            )
        for t in self.x_ticks:
            x = self.px(t)
            out.append(
                f'<text x="{x:.1f}" y="{HEIGHT - BOTTOM + 18}" text-anchor="middle" {FONT}>'
                f"{_fmt(t)}</text>"
            )
        bottom = HEIGHT - BOTTOM
        out.append(
            f'<polyline points="{LEFT},{TOP} {LEFT},{bottom} {WIDTH - RIGHT},{bottom}" '
            'fill="none" stroke="#333"/>'
        )
        out.append(
            f'<text x="{(LEFT + WIDTH - RIGHT) / 2:.1f}" y="{HEIGHT - 18}" '
            f'text-anchor="middle" {FONT}>{escape(x_label)}</text>'
        )
        out.append(
            f'<text transform="translate(18,{(TOP + bottom) / 2:.1f}) rotate(-90)" '
            f'text-anchor="middle" {FONT}>{escape(y_label)}</text>'
        )
        return out


def _document(title: str, body: list[str]) -> str:
    return "\n".join(
        [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
            f'viewBox="0 0 {WIDTH} {HEIGHT}">',
            f"<title>{escape(title)}</title>",
            f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
            f'<text x="{WIDTH / 2}" y="26" text-anchor="middle" font-family="sans-serif" '
            f'font-size="15" font-weight="bold">{escape(fit(title, WIDTH - 20, 9))}</text>',
            *body,
            "</svg>",
            "",
        ]
    )


def _no_data(title: str, message: str) -> str:
    return _document(
        title,
        [
            f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle" {FONT} '
            f'fill="#666">{escape(message)}</text>'
        ],
    )


def line_chart(
    series: dict[str, Sequence[tuple[float, float]]],
    *,
    title: str,
    x_label: str,
    y_label: str,
    empty: str = "No data yet.",
) -> str:
    """One polyline per named series (e.g. training and validation loss over steps)."""
    drawn = {
        name: [(x, y) for x, y in points if math.isfinite(y)] for name, points in series.items()
    }
    drawn = {name: points for name, points in drawn.items() if points}
    if not drawn:
        return _no_data(title, empty)
    frame = _Frame(
        [x for pts in drawn.values() for x, _ in pts], [y for pts in drawn.values() for _, y in pts]
    )
    body = frame.axes(x_label, y_label)
    for i, (name, points) in enumerate(drawn.items()):
        color = COLORS[i % len(COLORS)]
        coords = " ".join(f"{frame.px(x):.1f},{frame.py(y):.1f}" for x, y in points)
        body.append(f'<polyline points="{coords}" fill="none" stroke="{color}" stroke-width="2"/>')
        if len(points) == 1:
            x, y = points[0]
            body.append(
                f'<circle cx="{frame.px(x):.1f}" cy="{frame.py(y):.1f}" r="3" fill="{color}"/>'
            )
        legend_y = TOP + 4 + 18 * i
        body.append(
            f'<line x1="{WIDTH - RIGHT - 150}" y1="{legend_y}" x2="{WIDTH - RIGHT - 130}" '
            f'y2="{legend_y}" stroke="{color}" stroke-width="3"/>'
        )
        body.append(
            f'<text x="{WIDTH - RIGHT - 124}" y="{legend_y + 4}" {FONT}>{escape(name)}</text>'
        )
    return _document(title, body)


def scatter_chart(
    points: Sequence[Point],
    *,
    title: str,
    x_label: str,
    y_label: str,
    y_range: tuple[float, float] | None = None,
    empty: str = "No data yet.",
) -> str:
    """Labelled points with optional vertical error bars (e.g. accuracy with its 95%
    interval against prompt tokens per request, one point per variant)."""
    if not points:
        return _no_data(title, empty)
    xs = [p.x for p in points]
    ys = [v for p in points for v in (p.y, p.y_low, p.y_high) if v is not None]
    if y_range is not None:
        ys += list(y_range)
    pad = (max(xs) - min(xs)) * 0.1 or max(1.0, abs(xs[0]) * 0.1)
    frame = _Frame([min(xs) - pad, max(xs) + pad], ys)
    body = frame.axes(x_label, y_label)
    for i, p in enumerate(points):
        color = COLORS[i % len(COLORS)]
        x, y = frame.px(p.x), frame.py(p.y)
        if p.y_low is not None and p.y_high is not None:
            lo, hi = frame.py(p.y_low), frame.py(p.y_high)
            body.append(
                f'<line x1="{x:.1f}" y1="{lo:.1f}" x2="{x:.1f}" y2="{hi:.1f}" stroke="{color}"/>'
            )
            for end in (lo, hi):
                body.append(
                    f'<line x1="{x - 5:.1f}" y1="{end:.1f}" x2="{x + 5:.1f}" y2="{end:.1f}" '
                    f'stroke="{color}"/>'
                )
        body.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="5" fill="{color}"/>')
        # The label on one line, the note under it; each cut to the room beside the point.
        anchor = "end" if x > (LEFT + WIDTH - RIGHT) / 2 else "start"
        dx = -9 if anchor == "end" else 9
        room = (x - 10) if anchor == "end" else (WIDTH - 10 - x)
        lines = [fit(p.label, room)] + ([fit(p.note, room)] if p.note else [])
        for k, line in enumerate(lines):
            body.append(
                f'<text x="{x + dx:.1f}" y="{y - 8 + 14 * k:.1f}" text-anchor="{anchor}" {FONT} '
                f'fill="{color}">{escape(line)}</text>'
            )
    return _document(title, body)
