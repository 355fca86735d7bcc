"""A logging filter that masks webhook codes and tokens, so no secret reaches a log line."""

import logging
import re

# /rest/<user>/<code>/ in Bitrix webhook URLs, and token-like query/body values.
_PATTERNS = [
    (re.compile(r"(/rest/\d+/)[^/\s\"']+"), r"\1***"),
    (re.compile(r"((?:token|application_token|secret|code)[\]\"']?\s*[=:]\s*[\"']?)[^&\s\"',]+", re.I), r"\1***"),
    (re.compile(r"whsec_[A-Za-z0-9+/=]+"), "whsec_***"),
]


def redact(text: str) -> str:
    """Return text with every known secret shape masked."""
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactSecretsFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = redact(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True
