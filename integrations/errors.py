"""Errors shared by the low-level modules (rate-limit parsing, secret decoding) and the delivery engine."""


class ConfigurationError(ValueError):
    """A stored integration setting cannot be used (an operator's typo): the integration is paused with the reason,
    never a row ended. `outcomes` holds what the round had already obtained before it met the error (by sync id)."""

    def __init__(self, message: str, *, outcomes: dict | None = None):
        super().__init__(message)
        self.outcomes = outcomes or {}
