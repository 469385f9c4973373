"""Reading a line chart back: how many points each data curve has."""

import xml.etree.ElementTree as ET

NS = {"s": "http://www.w3.org/2000/svg"}


def curve_point_counts(svg: str) -> list[int]:
    """Points per data series (the axes' polyline is drawn in grey #333 and skipped)."""
    lines = ET.fromstring(svg).iterfind(".//s:polyline", NS)
    return [len(p.get("points", "").split()) for p in lines if p.get("stroke") != "#333"]
