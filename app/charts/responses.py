"""How chart endpoints answer: SVG with its media type, documented as such in OpenAPI."""

from typing import Any

from fastapi import Response

SVG_MEDIA_TYPE = "image/svg+xml"
SVG_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {SVG_MEDIA_TYPE: {"schema": {"type": "string"}}}, "description": "SVG"}
}


def svg_response(svg: str) -> Response:
    # Never cached: a running job's curve grows with every logged step.
    return Response(svg, media_type=SVG_MEDIA_TYPE, headers={"Cache-Control": "no-store"})
