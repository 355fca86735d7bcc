"""A logging filter that masks webhook codes, endpoint paths and tokens, so no secret reaches a log line.

The rules live in integrations/masking.py (one rule for every integration kind). The filter masks the message, its
arguments and the formatted traceback; Celery's own handlers get it too (app/celery.py)."""

import logging

from integrations.masking import redact, scrub

__all__ = ["RedactSecretsFilter", "redact", "install_filter"]
_formatter = logging.Formatter()


class RedactSecretsFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string is logging's problem to report, not ours
            return True
        masked = scrub(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = _formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = scrub(record.stack_info)
        return True


def install_filter(logger: logging.Logger | None = None) -> None:
    """Put the filter on every handler of `logger` (root by default) that lacks it, e.g. after Celery set them up."""
    logger = logger or logging.getLogger()
    for handler in logger.handlers:
        if not any(isinstance(f, RedactSecretsFilter) for f in handler.filters):
            handler.addFilter(RedactSecretsFilter())
