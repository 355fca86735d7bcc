"""Registry: integration kind → target instance (loaded on first use)."""

from integrations.models import IntegrationKind

_registry: dict[str, object] = {}


def register(kind: str, target: object) -> None:
    _registry[kind] = target


def target_for(kind: str):
    if kind not in _registry:
        _registry[kind] = _default(kind)
    return _registry[kind]


def _default(kind: str):
    if kind == IntegrationKind.BITRIX24:
        from integrations.targets.bitrix24 import BitrixTarget

        return BitrixTarget()
    from integrations.targets.n8n import N8nTarget

    return N8nTarget()
