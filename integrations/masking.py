"""How secrets look wherever a person can see them: admin, API, commands, logs."""

from urllib.parse import urlsplit


def mask_endpoint(url: str) -> str:
    """Keep scheme and host only: Bitrix webhook URLs carry the secret code in the path, n8n URLs often a token."""
    if not url:
        return ""
    parts = urlsplit(url)
    if not parts.netloc:
        return "***"
    return f"{parts.scheme}://{parts.netloc}/***"


def mask_secret(secret: str) -> str:
    if not secret:
        return ""
    return f"{secret[:6]}…{'*' * 6}" if secret.startswith("whsec_") else "******"
