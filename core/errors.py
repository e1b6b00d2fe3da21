"""Domain errors raised by services and mapped to HTTP at the edge."""

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied


class ApplicationError(Exception):
    """A rule of the platform was not met; ``message`` is shown to the user as is."""

    def __init__(self, message: str, *, code: str = "invalid", field: str | None = None, status: int = 400):
        super().__init__(message)
        self.message = message
        self.code = code
        self.field = field
        self.status = status


class PermissionDenied(ApplicationError, DjangoPermissionDenied):
    """The actor's role (or key's scope) does not allow the action: 403 at every edge.

    Also Django's ``PermissionDenied``, so a console view that does not catch it answers with the 403 page.
    """

    def __init__(self, message: str, *, code: str = "forbidden", field: str | None = None):
        super().__init__(message, code=code, field=field, status=403)
