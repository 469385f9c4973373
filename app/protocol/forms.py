"""Multipart form checks shared by the routes that take uploads."""

from fastapi import Request

from app.errors import BadRequest


async def single_form_fields(request: Request) -> None:
    """Refuse a form that sends a field twice (two `file` or two `purpose` parts): the
    framework would keep the last one silently. The form is parsed once and cached, so
    asking for it here costs nothing."""
    form = await request.form()
    for name in dict.fromkeys(form.keys()):
        count = len(form.getlist(name))
        if count > 1:
            raise BadRequest(
                f"'{name}' was sent {count} times; send each form field once.",
                param=name,
                code="duplicate_field",
            )
