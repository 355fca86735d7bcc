"""Bitrix24 REST portal emulator for tests and local runs: `BitrixSandbox().start().webhook_url`."""

from .events import robot_call
from .sandbox import BitrixSandbox

__all__ = ["BitrixSandbox", "robot_call"]
