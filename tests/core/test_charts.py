"""The static SVG charts: valid XML whatever the data, points where they belong, hostile labels kept as text."""

from __future__ import annotations

import math
import re
import unicodedata
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from a2i_core.core.charts import BOTTOM, HEIGHT, LEFT, RIGHT, TOP, WIDTH, bar_chart, line_chart, write_chart

SVG = "{http://www.w3.org/2000/svg}"
NAN, INF = float("nan"), float("inf")
HOSTILE = [
    "</text><script>alert(1)</script>",
    "a & b",
    "]]>",
    "x" * 200,
    "dog \U0001f436 \u732b",  # emoji and CJK
    "\u05db\u05dc\u05d1 \u0643\u0644\u0628",  # Hebrew and Arabic, no bidi controls
    "it's \"quoted\"",
    "nul\x00 lone\ud800 surrogate",  # not allowed in XML at all
]


def parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    return root


def polylines(root: ET.Element) -> dict[str, list[tuple[float, float]]]:
    out = {}
    for line in root.iter(f"{SVG}polyline"):
        name = line.find(f"{SVG}title").text
        out[name] = [tuple(map(float, p.split(","))) for p in line.get("points").split()]
    return out


def rows(root: ET.Element) -> list[ET.Element]:
    return [g for g in root.iter(f"{SVG}g") if g.get("class") == "row"]


def texts(element: ET.Element) -> list[str]:
    return [t.text or "" for t in element.iter(f"{SVG}text")]


def test_one_polyline_per_non_empty_series_with_only_finite_points():
    series = {
        "train_loss": [(0, 2.0), (1, 1.5), (2, 1.1), (3, 0.9), (4, 0.8)],
        "val_loss": [(0, 2.2), (1, NAN), (2, 1.4), (3, INF), (4, 1.2)],
        "empty": [],
    }
    svg = line_chart(series, "Loss", "epoch", "loss")
    assert "nan" not in svg and "inf" not in svg
    lines = polylines(parse(svg))
    assert sorted(lines) == ["train_loss", "val_loss"]
    assert len(lines["train_loss"]) == 5 and len(lines["val_loss"]) == 3
    for points in lines.values():
        xs = [x for x, _ in points]
        assert xs == sorted(xs) and len(set(xs)) == len(xs)
        assert all(LEFT <= x <= WIDTH - RIGHT and TOP <= y <= HEIGHT - BOTTOM for x, y in points)


def test_higher_values_are_drawn_higher():
    (points,) = polylines(parse(line_chart({"acc": [(0, 1.0), (1, 3.0), (2, 2.0)]}, "t", "x", "y"))).values()
    y_of_1, y_of_3, y_of_2 = (y for _, y in points)
    assert y_of_3 < y_of_2 < y_of_1


def test_loss_curves_of_different_scales_share_one_axis():
    lines = polylines(parse(line_chart({"a": [(0, 10.0), (1, 0.0)], "b": [(0, 5.0), (1, 5.0)]}, "t", "x", "y")))
    (_, a_top), (_, a_bottom) = lines["a"]
    (_, b_mid), _ = lines["b"]
    assert a_top < b_mid < a_bottom
    assert b_mid == pytest.approx((a_top + a_bottom) / 2, abs=0.02)


def test_y_ticks_are_round_numbers_spanning_the_data():
    root = parse(line_chart({"loss": [(0, 0.137), (1, 2.871)]}, "t", "x", "y"))
    labels = [t.text for t in root.iter(f"{SVG}text") if t.get("text-anchor") == "end"]
    values = [float(v) for v in labels]
    assert len(values) >= 3 and values == sorted(values)
    steps = {round(b - a, 9) for a, b in zip(values, values[1:], strict=False)}
    assert len(steps) == 1
    step = steps.pop()
    assert step / 10 ** math.floor(math.log10(step)) in (1, 2, 2.5, 5)
    assert all(v == pytest.approx(round(v / step) * step) for v in values)
    assert values[0] <= 0.137 + step and values[-1] >= 2.871 - step


@pytest.mark.parametrize(
    "series",
    [{}, {"a": []}, {"a": [], "b": []}, {"a": [(NAN, 1.0), (1.0, INF), (2.0, -INF)]}],
    ids=["no-series", "one-empty", "all-empty", "all-non-finite"],
)
def test_nothing_to_draw_says_no_data(series):
    root = parse(line_chart(series, "Loss", "epoch", "loss"))
    assert not list(root.iter(f"{SVG}polyline"))
    assert "no data" in texts(root)
    assert "nan" not in ET.tostring(root, encoding="unicode").lower()


def test_a_single_point_is_a_marker_inside_the_plot():
    root = parse(line_chart({"val": [(3, 0.5)]}, "t", "x", "y"))
    (circle,) = root.iter(f"{SVG}circle")
    x, y = float(circle.get("cx")), float(circle.get("cy"))
    assert LEFT < x < WIDTH - RIGHT and TOP < y < HEIGHT - BOTTOM


@pytest.mark.parametrize("y", [0.0, 7.5, -3.0, 1e-300, 5e-324, 1e300, 1.7976931348623157e308])
def test_a_flat_curve_still_has_a_range(y):
    svg = line_chart({"flat": [(0, y), (1, y), (2, y)]}, "t", "x", "y")
    (points,) = polylines(parse(svg)).values()
    assert len({p[1] for p in points}) == 1
    assert TOP <= points[0][1] <= HEIGHT - BOTTOM
    if abs(y) < 1e300:  # only at the float limit is there no room above
        assert points[0][1] == pytest.approx((TOP + HEIGHT - BOTTOM) / 2)
    assert "nan" not in svg.lower() and "inf" not in svg.lower()


def test_extreme_values_stay_inside_the_plot():
    big = 1.7976931348623157e308
    svg = line_chart({"a": [(0, -big), (1, big)], "b": [(-big, 0.0), (big, 5e-324)], "c": [(0, 1e-323)]}, "t", "x", "y")
    assert "nan" not in svg and "inf" not in svg
    for points in polylines(parse(svg)).values():
        assert all(LEFT <= x <= WIDTH - RIGHT and TOP <= y <= HEIGHT - BOTTOM for x, y in points)


def test_bar_widths_are_proportional_to_values_and_height_grows_with_rows():
    values = [0.2, 0.4, 0.8, 1.0]
    root = parse(bar_chart(["a", "b", "c", "d"], values, "Top-1", "top-1"))
    widths = [float(g.find(f"{SVG}rect").get("width")) for g in rows(root)]
    ratios = [w / v for w, v in zip(widths, values, strict=True)]
    assert max(ratios) == pytest.approx(min(ratios), rel=1e-3)
    many = parse(bar_chart([str(i) for i in range(40)], [0.5] * 40, "t", "x"))
    assert float(many.get("height")) > float(root.get("height"))
    assert all(0 <= float(g.find(f"{SVG}rect").get("y")) < float(many.get("height")) for g in rows(many))


def test_bar_values_outside_the_range_are_clipped_but_printed_and_nan_has_no_bar():
    root = parse(bar_chart(["over", "under", "nan", "inf", "full"], [1.5, -0.3, NAN, INF, 1.0], "t", "x"))
    full = float(rows(root)[4].find(f"{SVG}rect").get("width"))
    over, under, nan, inf, _ = rows(root)
    assert float(over.find(f"{SVG}rect").get("width")) == full
    assert float(under.find(f"{SVG}rect").get("width")) == 0
    assert float(inf.find(f"{SVG}rect").get("width")) == full
    assert nan.find(f"{SVG}rect") is None
    assert [texts(g)[1] for g in (over, under, nan, inf)] == ["1.500", "-0.300", "n/a", "inf"]


def test_bar_chart_without_x_max_scales_to_the_largest_value():
    root = parse(bar_chart(["a", "b"], [10.0, 5.0], "t", "x", x_max=None))
    wide, half = (float(g.find(f"{SVG}rect").get("width")) for g in rows(root))
    assert wide == pytest.approx(2 * half)
    assert "10.000" in texts(root)


def test_bar_chart_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match="labels"):
        bar_chart(["a", "b"], [0.5], "t", "x")
    with pytest.raises(ValueError, match="x_max"):
        bar_chart(["a"], [0.5], "t", "x", x_max=0.0)
    assert "no data" in texts(parse(bar_chart([], [], "t", "x")))


def test_hostile_labels_stay_text():
    svg = bar_chart(HOSTILE, [0.5] * len(HOSTILE), "<b>title</b> & ]]>", "x & <y>")
    assert svg.isascii()  # other characters are written as references, whatever the locale's encoding
    root = parse(svg)
    assert not [e for e in root.iter() if e.tag.rsplit("}", 1)[-1].lower() == "script"]
    assert root.find(f"{SVG}title").text == "<b>title</b> & ]]>"
    for label, row in zip(HOSTILE, rows(root), strict=True):
        expected = label.replace("\x00", "\ufffd").replace("\ud800", "\ufffd")
        assert row.find(f"{SVG}title").text == f"{expected}: 0.500"  # the whole label, as a tooltip
        shown = texts(row)[0]
        assert shown == expected or (shown.endswith("\u2026") and expected.startswith(shown[:-1]))
        assert sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in shown) <= 30
    assert texts(rows(root)[4])[0] == "dog \U0001f436 \u732b"
    assert texts(rows(root)[5])[0] == HOSTILE[5]


def test_hostile_series_names_stay_text():
    series = {name: [(0, 1.0), (1, 0.5)] for name in HOSTILE}
    root = parse(line_chart(series, "</title><script>x</script>", "]]>", "a & b"))
    assert not [e for e in root.iter() if e.tag.rsplit("}", 1)[-1].lower() == "script"]
    assert len(polylines(root)) == len(HOSTILE)
    assert "]]>" in texts(root) and "a & b" in texts(root)


def test_no_external_resources():
    for svg in (line_chart({"a": [(0, 1.0), (1, 2.0)]}, "t", "x", "y"), bar_chart(["a"], [0.5], "t", "x")):
        root = parse(svg)
        assert {"width", "height", "viewBox"} <= set(root.attrib)
        assert root[0].tag == f"{SVG}title"
        assert svg.count("http") == 1  # the namespace only
        assert not any(k.endswith("href") for e in root.iter() for k in e.attrib)
        assert "url(" not in svg and "@import" not in svg and "<style" not in svg


def test_output_is_deterministic():
    def build():
        curves = {"train": [(i, 1 / (i + 1)) for i in range(20)], "val": [(i, 1.1 / (i + 1)) for i in range(20)]}
        return line_chart(curves, "Loss", "epoch", "loss"), bar_chart(["a", "b"], [1 / 3, 2 / 3], "t", "x")

    assert build() == build()
    coords = [n for svg in build() for n in re.findall(r' (?:points|x|y)="([^"]*)"', svg) if "." in n]
    assert coords and all(re.fullmatch(r"(\d+\.\d\d[ ,]?)+", c) for c in coords)  # fixed precision


def test_write_chart_replaces_the_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "loss.svg"
    target.write_text("old")
    svg = line_chart({"a": [(0, 1.0), (1, 2.0)]}, "t", "x", "y")
    write_chart(target, svg)
    assert target.read_bytes() == svg.encode("ascii")
    assert [p.name for p in tmp_path.iterdir()] == ["loss.svg"]
    parse(target.read_text())


def test_write_chart_failing_midway_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "loss.svg"
    target.write_text("old")
    real_write = Path.write_text

    def half_then_fail(self, text, *args, **kwargs):
        real_write(self, text[:10])
        raise OSError("disk full")

    monkeypatch.setattr(Path, "write_text", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        write_chart(target, line_chart({"a": [(0, 1.0)]}, "t", "x", "y"))
    monkeypatch.undo()
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["loss.svg"]
