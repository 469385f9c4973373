"""What the engine raises, or reports in a `Failed` event: its own small types, with no HTTP
in them. The API maps each to the OpenAI error envelope (app/errors.py, `engine_api_error`).
"""


class EngineError(Exception):
    """`code` names the failure for machines; `param`, when set, the input at fault."""

    code = "engine_error"

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class InvalidInput(EngineError):
    """A request the engine cannot run as given (the caller's mistake)."""

    def __init__(self, message: str, *, param: str, code: str) -> None:
        super().__init__(message, param=param)
        self.code = code


class EngineBusy(EngineError):
    """Not now, but worth retrying shortly."""

    retry_after_s = 1


class EngineOverloaded(EngineBusy):
    code = "server_overloaded"


class EngineShuttingDown(EngineBusy):
    code = "server_shutting_down"


class AdapterLoadError(EngineError):
    """An adapter's files are missing or corrupt; only the requests that need it fail."""

    code = "adapter_unavailable"


class GenerationFailed(EngineError):
    """An unexpected error inside a forward pass or sampling."""

    code = "generation_failed"
