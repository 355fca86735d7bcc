"""Bulk history via SQL generate_series: finished (synced) IntegrationSync rows, optionally one attempt each."""

import time

_SYNCS = """
INSERT INTO integrations_integrationsync
  (integration_id, content_type_id, object_id, event_type, event_id, sequence, payload, changes, status, attempts,
   next_attempt_at, last_error, remote_id, occurred_at, created_at, synced_at, updated_at)
SELECT %(integration)s, %(ct)s, 'h' || (i / 10), 'updated', gen_random_uuid(), i %% 10 + 1,
       '{"id": 1, "title": "history", "amount": "10.00", "status": "done"}'::jsonb, '{}'::jsonb, 'synced', 1,
       now() - %(age)s * interval '1 day', '', '', now() - %(age)s * interval '1 day',
       now() - %(age)s * interval '1 day', now() - %(age)s * interval '1 day', now() - %(age)s * interval '1 day'
FROM generate_series(%(start)s, %(stop)s) AS i
"""
_ATTEMPTS = """
INSERT INTO integrations_syncattempt
  (sync_id, number, started_at, duration_ms, request_summary, http_status, response_excerpt, error_class,
   error_message, outcome, worker)
SELECT id, 1, updated_at, 12, 'POST n8n order.updated', 200, '{"ok":true}', '', '', 'ok', 'bench'
FROM integrations_integrationsync WHERE id BETWEEN %(first)s AND %(last)s
"""


def insert_synced(
    *,
    integration_id: int,
    content_type_id: int,
    total: int,
    age_days: int,
    attempts: bool,
    chunk: int = 250_000,
    max_seconds: float | None = None,
) -> tuple[int, float]:
    """Insert up to `total` rows (fewer if max_seconds runs out); returns (rows inserted, seconds)."""
    from django.db import connection, transaction

    started, done = time.perf_counter(), 0
    with connection.cursor() as cursor:
        cursor.execute("SET synchronous_commit = off")
        cursor.execute("SELECT coalesce(max(i), 0) FROM (SELECT max(id) AS i FROM integrations_integrationsync) m")
        offset = cursor.fetchone()[0] * 10 + 1  # fresh object ids across calls
    while done < total:
        if max_seconds is not None and time.perf_counter() - started > max_seconds:
            break
        size = min(chunk, total - done)
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                _SYNCS,
                {
                    "integration": integration_id,
                    "ct": content_type_id,
                    "age": age_days,
                    "start": offset + done,
                    "stop": offset + done + size - 1,
                },
            )
            if attempts:
                cursor.execute(
                    "SELECT min(id), max(id) FROM integrations_integrationsync WHERE status = 'synced' "
                    "AND id > (SELECT coalesce(max(sync_id), 0) FROM integrations_syncattempt)"
                )
                first, last = cursor.fetchone()
                cursor.execute(_ATTEMPTS, {"first": first, "last": last})
        done += size
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE integrations_integrationsync")
        if attempts:
            cursor.execute("ANALYZE integrations_syncattempt")
        cursor.execute("SET synchronous_commit = on")
    return done, time.perf_counter() - started
