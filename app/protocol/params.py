"""Text that reaches a route outside a JSON body: path and query parameters, form fields and
the names of uploaded files. One app-wide dependency applies RequestModel's rule to them (no
NUL, no lone UTF-16 surrogate; app/protocol/values.py), so a `%00` in a URL or a form is a
400 naming the parameter on both databases instead of a 500 from PostgreSQL."""

from fastapi import Request
from starlette.datastructures import UploadFile

from app.protocol.values import refuse_text, unstorable_at

FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")


def _check_pairs(pairs: list[tuple[str, str | UploadFile]], where: str) -> None:
    for key, value in pairs:
        # A bad name cannot be the param: the error names where it was sent.
        refuse_text(key, where if unstorable_at(key) is not None else key)
        if isinstance(value, UploadFile):
            refuse_text(value.filename or "", key)
        else:
            refuse_text(value, key)


async def check_request_text(request: Request) -> None:
    """Refuse (400 invalid_text) a path parameter, query parameter or form field that holds a
    NUL or a lone surrogate; `param` names it."""
    for name, value in request.path_params.items():
        if isinstance(value, str):
            refuse_text(value, name)
    _check_pairs(request.query_params.multi_items(), "query")
    content_type = request.headers.get("content-type", "")
    if content_type.startswith(FORM_TYPES):
        form = await request.form()  # parsed once: the route's Form fields reuse it
        _check_pairs(form.multi_items(), "form")
