"""Domain errors raised by services and mapped to HTTP at the edge."""


class ApplicationError(Exception):
    """A rule of the platform was not met; ``message`` is shown to the user as is."""

    def __init__(self, message: str, *, code: str = "invalid", field: str | None = None, status: int = 400):
        super().__init__(message)
        self.message = message
        self.code = code
        self.field = field
        self.status = status
