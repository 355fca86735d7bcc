"""Row counts by integration and status without scanning the history: finished rows from the trigger-kept tally
(SyncStatusTally, migration 0009), open rows through the partial indexes that only hold open rows."""

from datetime import datetime

from django.db import connection, transaction

# Each branch names the statuses of one partial index (sync_due_idx, sync_lease_idx), so the planner can use it.
_COUNTS_SQL = """
SELECT integration_id, status, sum(n)::bigint, NULL::timestamptz FROM integrations_syncstatustally
GROUP BY 1, 2 HAVING sum(n) <> 0
UNION ALL
SELECT integration_id, status, count(*), min(created_at) FROM integrations_integrationsync
WHERE status IN ('pending', 'retrying') GROUP BY 1, 2
UNION ALL
SELECT integration_id, status, count(*), min(created_at) FROM integrations_integrationsync
WHERE status = 'in_progress' GROUP BY 1, 2
"""

# Appended +1/-1 rows folded into one row per (integration, status); rows appended meanwhile stay for the next
# fold (the DELETE's snapshot does not see them), and rows of deleted integrations go.
_COMPACT_SQL = """
WITH folded AS (DELETE FROM integrations_syncstatustally RETURNING integration_id, status, n)
INSERT INTO integrations_syncstatustally (integration_id, status, n)
SELECT f.integration_id, f.status, sum(f.n) FROM folded f
WHERE EXISTS (SELECT 1 FROM integrations_integration i WHERE i.id = f.integration_id)
GROUP BY 1, 2 HAVING sum(f.n) <> 0
"""


def counts_and_oldest() -> tuple[dict[int, dict[str, int]], dict[int, datetime]]:
    """({integration id: {status: rows}}, {integration id: created_at of its oldest open row}) in one snapshot."""
    counts: dict[int, dict[str, int]] = {}
    oldest: dict[int, datetime] = {}
    with connection.cursor() as cursor:
        cursor.execute(_COUNTS_SQL)
        for integration_id, status, n, first in cursor.fetchall():
            counts.setdefault(integration_id, {})[status] = n
            if first is not None and (integration_id not in oldest or first < oldest[integration_id]):
                oldest[integration_id] = first
    return counts, oldest


def compact() -> None:
    """Fold the tally's appended rows (the periodic sweep calls it; counts are right without it, only slower)."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(_COMPACT_SQL)
