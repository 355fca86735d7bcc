"""Inbound Bitrix24 calls: the gate view stores every request (services), a Celery task processes accepted ones."""
