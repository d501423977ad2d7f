"""Static SVG charts of the pipeline's curves and per-class scores.

``dvc plots show`` loads Vega from a CDN, so its plots are blank offline; a hand-written SVG shows anywhere (offline,
in a pull request, as a DVC image plot) and needs no plotting library. The output is plain ASCII (other characters
become character references), so it is the same file whatever encoding the locale would have written it in.
"""

from __future__ import annotations

import html
import math
import re
import sys
import unicodedata
from pathlib import Path

from a2i_core.core.files import write_text

WIDTH, HEIGHT = 640, 360
LEFT, RIGHT, TOP, BOTTOM = 64, 170, 40, 48  # line chart margins; the right one holds the legend
LEGEND_ROW = 18
ROW, LABEL_W, VALUE_W = 22, 190, 72  # bar chart: row height, label column, room for the printed value
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")  # lone surrogates, controls


def line_chart(series: dict[str, list[tuple[float, float]]], title: str, x_label: str, y_label: str) -> str:
    """Curves such as train and validation loss per epoch; a non-finite point is left out, never breaking the file."""
    clean = {name: [(float(x), float(y)) for x, y in pts if math.isfinite(x) and math.isfinite(y)]
             for name, pts in series.items()}
    points = [p for pts in clean.values() for p in pts]
    if not points:
        return _no_data(title)
    x0, x1 = _padded([x for x, _ in points], 0.0)
    y0, y1 = _padded([y for _, y in points], 0.05)
    right, bottom = WIDTH - RIGHT, HEIGHT - BOTTOM
    body = [f'<rect x="{LEFT}" y="{TOP}" width="{right - LEFT}" height="{bottom - TOP}" fill="none" stroke="#888"/>']
    for t, label in _ticks(y0, y1):
        y = _at(t, y0, y1, bottom, TOP)
        body.append(f'<line x1="{LEFT}" y1="{_n(y)}" x2="{right}" y2="{_n(y)}" stroke="#ddd"/>')
        body.append(_text(LEFT - 6, y + 4, label, "end"))
    for t, label in _ticks(x0, x1):
        x = _at(t, x0, x1, LEFT, right)
        body.append(f'<line x1="{_n(x)}" y1="{bottom}" x2="{_n(x)}" y2="{bottom + 4}" stroke="#888"/>')
        body.append(_text(x, bottom + 16, label, "middle"))
    body.append(_text((LEFT + right) / 2, HEIGHT - 10, _fit(x_label, 60), "middle"))
    mid = (TOP + bottom) / 2
    body.append(_text(16, mid, _fit(y_label, 40), "middle", f' transform="rotate(-90 16 {_n(mid)})"'))
    for i, (name, pts) in enumerate(clean.items()):
        xy = [(_at(x, x0, x1, LEFT, right), _at(y, y0, y1, bottom, TOP)) for x, y in pts]
        colour, tip = COLOURS[i % len(COLOURS)], f"<title>{_esc(name)}</title>"
        if xy:
            coords = " ".join(f"{_n(x)},{_n(y)}" for x, y in xy)
            body.append(f'<polyline points="{coords}" fill="none" stroke="{colour}" stroke-width="2">{tip}</polyline>')
        if len(xy) == 1:  # a one-point polyline draws nothing
            body.append(f'<circle cx="{_n(xy[0][0])}" cy="{_n(xy[0][1])}" r="3" fill="{colour}">{tip}</circle>')
    return _svg(title, HEIGHT, body + _legend(clean))


def bar_chart(labels: list[str], values: list[float], title: str, x_label: str, x_max: float | None = 1.0) -> str:
    """Per-class scores (top-1 retrieval); labels come from users' data, so they are escaped and shortened.

    ``x_max=None`` scales to the largest value. Values outside [0, x_max] are clipped for drawing, printed as they are.
    """
    if len(labels) != len(values):
        raise ValueError(f"bar_chart: {len(labels)} labels but {len(values)} values")
    if x_max is not None and not (math.isfinite(x_max) and x_max > 0):
        raise ValueError(f"bar_chart: x_max must be a positive number or None, not {x_max!r}")
    if not labels:
        return _no_data(title)
    vals = [float(v) for v in values]
    top = x_max or max([v for v in vals if math.isfinite(v) and v > 0], default=1.0)
    bar_w, bottom = WIDTH - LABEL_W - VALUE_W, TOP + ROW * len(labels)
    body = []
    for t, label in _ticks(0.0, top):
        x = _at(t, 0.0, top, LABEL_W, LABEL_W + bar_w)
        body.append(f'<line x1="{_n(x)}" y1="{TOP}" x2="{_n(x)}" y2="{bottom}" stroke="#ddd"/>')
        body.append(_text(x, bottom + 16, label, "middle"))
    for i, (label, v) in enumerate(zip(labels, vals, strict=True)):
        y, shown = TOP + ROW * i, "n/a" if math.isnan(v) else _value(v)
        row = [f'<g class="row"><title>{_esc(label)}: {shown}</title>']
        row.append(_text(LABEL_W - 6, y + ROW / 2 + 4, _fit(label, 30), "end"))
        w = 0.0 if math.isnan(v) else bar_w * (min(max(v, 0.0), top) / top)
        if not math.isnan(v):
            row.append(f'<rect x="{LABEL_W}" y="{y + 3}" width="{_n(w)}" height="{ROW - 6}" fill="{COLOURS[0]}"/>')
        body.append("".join([*row, _text(LABEL_W + w + 4, y + ROW / 2 + 4, shown, "start"), "</g>"]))
    body.append(f'<line x1="{LABEL_W}" y1="{TOP}" x2="{LABEL_W}" y2="{bottom}" stroke="#888"/>')
    body.append(_text(LABEL_W + bar_w / 2, bottom + 36, _fit(x_label, 60), "middle"))
    return _svg(title, bottom + BOTTOM, body)


def write_chart(path: Path, svg: str) -> None:
    """Write atomically: DVC, a browser or a reviewer never sees half a chart, and a failed run leaves the old one."""
    write_text(path, svg)


def _legend(clean: dict[str, list[tuple[float, float]]]) -> list[str]:
    rows = (HEIGHT - TOP - BOTTOM) // LEGEND_ROW
    names = list(clean)
    shown = names if len(names) <= rows else names[: rows - 1]
    out, x = [], WIDTH - RIGHT + 12
    for i, name in enumerate(shown):
        y, colour = TOP + 8 + LEGEND_ROW * i, COLOURS[i % len(COLOURS)]
        out.append(f'<line x1="{x}" y1="{y}" x2="{x + 16}" y2="{y}" stroke="{colour}" stroke-width="2"/>')
        out.append(_text(x + 22, y + 4, _fit(name, 20) + ("" if clean[name] else " (no data)"), "start"))
    if len(shown) < len(names):
        out.append(_text(x, TOP + 8 + LEGEND_ROW * len(shown) + 4, f"+{len(names) - len(shown)} more", "start"))
    return out


def _no_data(title: str) -> str:
    return _svg(title, HEIGHT, [_text(WIDTH / 2, HEIGHT / 2, "no data", "middle")])


def _svg(title: str, height: int, body: list[str]) -> str:
    head = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}"'
            ' font-family="sans-serif" font-size="11">')
    frame = [head, f"<title>{_esc(title)}</title>", f'<rect width="{WIDTH}" height="{height}" fill="#fff"/>',
             _text(WIDTH / 2, 22, _fit(title, 80), "middle", ' font-size="14"')]
    return "\n".join([*frame, *body, "</svg>"]) + "\n"


def _text(x: float, y: float, content: str, anchor: str, extra: str = "") -> str:
    return f'<text x="{_n(x)}" y="{_n(y)}" text-anchor="{anchor}"{extra}>{_esc(content)}</text>'


def _esc(text: str) -> str:
    # html.escape covers &, <, > and both quotes; characters XML forbids outright become U+FFFD
    return html.escape(_NOT_XML.sub("\ufffd", str(text))).encode("ascii", "xmlcharrefreplace").decode("ascii")


def _fit(text: str, columns: int) -> str:
    """Shorten for display; CJK and most emoji take two columns."""
    widths = [2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1 for ch in text]
    if sum(widths) <= columns:
        return text
    used = end = 0
    while used + widths[end] <= columns - 1:
        used, end = used + widths[end], end + 1
    return text[:end] + "\u2026"


def _padded(values: list[float], pad: float) -> tuple[float, float]:
    """A range holding ``values`` with a margin; never empty, so a flat curve still has a scale."""
    lo, hi = min(values), max(values)
    half = hi / 2 - lo / 2  # halves: hi - lo overflows for values near the float limit
    margin = half * (2 * pad) if half > 0 else (abs(lo) * 0.1 or 1.0)
    a, b = max(lo - margin, -sys.float_info.max), min(hi + margin, sys.float_info.max)
    return (a, b) if b / 2 - a / 2 > 0 else (lo - 1.0, hi + 1.0)  # subnormal values: the halves can round to one


def _at(v: float, lo: float, hi: float, start: float, end: float) -> float:
    return start + (end - start) * ((v / 2 - lo / 2) / (hi / 2 - lo / 2))  # divide first: no overflow


def _ticks(lo: float, hi: float, count: int = 5) -> list[tuple[float, str]]:
    """Round numbers (1, 2, 2.5 or 5 times a power of ten) inside [lo, hi], with labels as precise as the step."""
    raw = (hi / 2 - lo / 2) / count * 2
    if not (raw > 0 and math.isfinite(raw)):
        return []
    k = math.floor(math.log10(raw))
    m = next((m for m in (1, 2, 2.5, 5) if m * 10.0**k >= raw), 10)
    step = m * 10.0**k
    if not (step > 0 and math.isfinite(step)):
        return []
    decimals = max(0, -k - (m == 10)) + (m == 2.5)
    first = math.ceil(lo / step)
    values = [t for t in ((first + i) * step for i in range(3 * count)) if lo <= t <= hi]
    return [(t, _tick(t, decimals)) for t in values]


def _tick(t: float, decimals: int) -> str:
    text = f"{t:.{decimals}f}" if decimals <= 6 and abs(t) < 1e9 else f"{t:.4g}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def _value(v: float) -> str:
    return f"{v:.3f}" if abs(v) < 1e6 else f"{v:.3g}"


def _n(v: float) -> str:
    return f"{v:.2f}"
