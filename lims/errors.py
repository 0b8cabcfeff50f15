"""Domain errors. Services raise them; the web layer turns them into an HTTP answer.

Each class carries the status a view or the API should answer with, so a refusal can never
surface as a 500 and the mapping lives in one place.
"""

from __future__ import annotations


class ConfigurationError(RuntimeError):
    """The configuration is malformed; raised at start-up, never during a request."""


class DomainError(Exception):
    """A refusal a user can act on. ``message`` is shown to them as it is."""

    status_code = 400
    code = "invalid"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        #: The form field or JSON key the refusal is about, when there is one.
        self.field = field

    def to_dict(self) -> dict[str, str]:
        body = {"error": self.code, "message": self.message}
        if self.field:
            body["field"] = self.field
        return body


class ValidationError(DomainError):
    status_code = 422
    code = "validation_failed"


class NotFound(DomainError):
    status_code = 404
    code = "not_found"


class Forbidden(DomainError):
    status_code = 403
    code = "forbidden"


class Conflict(DomainError):
    """The request is well formed but clashes with the current state (duplicate, stale, ...)."""

    status_code = 409
    code = "conflict"


class InvalidTransition(Conflict):
    code = "invalid_transition"


class AuthenticationFailed(DomainError):
    status_code = 401
    code = "authentication_failed"


class AccountLocked(AuthenticationFailed):
    code = "account_locked"
