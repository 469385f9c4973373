"""The SVG primitives: well-formed documents, data placed where it belongs, names escaped."""

import xml.etree.ElementTree as ET

import pytest

from app.charts.svg import Point, fit, line_chart, nice_ticks, scatter_chart

NS = {"s": "http://www.w3.org/2000/svg"}


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)  # raises on anything malformed


def texts(root: ET.Element) -> list[str]:
    return ["".join(t.itertext()) for t in root.iterfind(".//s:text", NS)]


@pytest.mark.parametrize(
    ("low", "high", "expected"),
    [
        (0, 1, [0, 0.2, 0.4, 0.6, 0.8, 1.0]),
        (0.13, 0.83, [0, 0.2, 0.4, 0.6, 0.8, 1.0]),
        (3, 3, [3, 4, 5, 6]),
        (0, 150, [0, 50, 100, 150]),
    ],
)
def test_nice_ticks_cover_the_range(low, high, expected) -> None:
    ticks = nice_ticks(low, high)
    assert ticks == pytest.approx(expected)
    assert ticks[0] <= low and ticks[-1] >= high


def test_line_chart_draws_each_series_in_order() -> None:
    svg = line_chart(
        {"training loss": [(1, 2.0), (2, 1.0), (3, 0.5)], "validation loss": [(1, 2.5), (3, 0.9)]},
        title="loss",
        x_label="step",
        y_label="loss",
    )
    root = parse(svg)
    lines = [p for p in root.iterfind(".//s:polyline", NS) if p.get("stroke") != "#333"]
    assert len(lines) == 2
    train = [tuple(map(float, xy.split(","))) for xy in lines[0].get("points").split()]
    assert len(train) == 3
    xs, ys = [x for x, _ in train], [y for _, y in train]
    assert xs == sorted(xs) and xs[0] < xs[-1]
    assert ys == sorted(ys)  # falling loss is drawn going down the page (larger y)
    assert {"training loss", "validation loss", "step", "loss"} <= set(texts(root))


def test_scatter_places_points_and_error_bars() -> None:
    points = [
        Point("cheap", x=56, y=0.83, y_low=0.77, y_high=0.88, note="0.83"),
        Point("costly", x=199, y=0.52, y_low=0.45, y_high=0.58),
    ]
    root = parse(scatter_chart(points, title="t", x_label="tokens", y_label="acc", y_range=(0, 1)))
    circles = list(root.iterfind(".//s:circle", NS))
    assert len(circles) == 2
    (x1, y1), (x2, y2) = [(float(c.get("cx")), float(c.get("cy"))) for c in circles]
    assert x1 < x2  # fewer tokens to the left
    assert y1 < y2  # higher accuracy higher up
    whiskers = [
        ln
        for ln in root.iterfind(".//s:line", NS)
        if ln.get("x1") == ln.get("x2") == circles[0].get("cx")
    ]
    (bar,) = whiskers
    top, bottom = sorted([float(bar.get("y1")), float(bar.get("y2"))])
    assert top < y1 < bottom
    assert {"cheap", "0.83"} <= set(texts(root))  # the label, the note under it


def test_long_labels_are_cut_in_the_middle_to_fit() -> None:
    name = "ft:smollm2-135m-instruct:sst2:ftjob-e4cc6544e4470549ce49f9e0"
    assert fit(name, 1000) == name
    short = fit(name, 140)
    assert len(short) == 20 and short.startswith("ft:smollm") and short.endswith("49f9e0")
    assert "…" in short
    longer = f"{name}-with-a-much-longer-suffix-than-anyone-should-pick"
    points = [Point(longer, 56, 0.8), Point("b", 199, 0.5)]
    root = parse(scatter_chart(points, title="t", x_label="x", y_label="y"))
    label = next(t for t in texts(root) if t.startswith("ft:"))
    assert "…" in label and len(label) < len(longer)


def test_user_text_is_escaped_and_empty_data_says_so() -> None:
    evil = 'tmpl:<script>alert("x")</script>&'
    svg = scatter_chart([Point(evil, 1, 0.5)], title=evil, x_label="x", y_label="y")
    assert "<script>" not in svg
    assert evil in texts(parse(svg))
    empty = line_chart({"training loss": []}, title="t", x_label="x", y_label="y", empty="Nothing.")
    assert "Nothing." in texts(parse(empty))
    assert "Nothing." in texts(
        parse(scatter_chart([], title="t", x_label="x", y_label="y", empty="Nothing."))
    )
