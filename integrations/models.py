"""Integration configuration apart from delivery history (IntegrationSync + SyncAttempt), links and inbound calls."""

import uuid

from django.contrib.contenttypes.fields import GenericForeignKey
from django.contrib.contenttypes.models import ContentType
from django.db import models
from django.db.models import Q

from integrations.fields import EncryptedTextField


class IntegrationKind(models.TextChoices):
    BITRIX24 = "bitrix24", "Bitrix24"
    N8N = "n8n", "n8n"


class EventType(models.TextChoices):
    CREATED = "created", "Created"
    UPDATED = "updated", "Updated"
    STATUS_CHANGED = "status_changed", "Status changed"
    DELETED = "deleted", "Deleted"


class SyncStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    IN_PROGRESS = "in_progress", "In progress"
    SYNCED = "synced", "Synced"
    RETRYING = "retrying", "Retrying"
    FAILED = "failed", "Failed (terminal error)"
    DEAD = "dead", "Dead (attempts exhausted)"
    SUPERSEDED = "superseded", "Superseded"
    SKIPPED = "skipped", "Skipped"


OPEN_STATUSES = (SyncStatus.PENDING, SyncStatus.IN_PROGRESS, SyncStatus.RETRYING)
DUE_STATUSES = (SyncStatus.PENDING, SyncStatus.RETRYING)


class Integration(models.Model):
    """One configured target. `endpoint` and the secrets are secret: encrypted at rest, masked in admin/API/logs."""

    kind = models.CharField(max_length=20, choices=IntegrationKind.choices)
    name = models.CharField(max_length=100, unique=True)
    enabled = models.BooleanField(default=True)
    # Encrypted at rest (integrations/fields.py): the Bitrix24 URL holds the webhook code, n8n's its webhook path.
    endpoint = EncryptedTextField(help_text="Bitrix24 inbound webhook URL or n8n webhook URL (secret).")
    secret = EncryptedTextField(blank=True, default="", help_text="Signing secret whsec_… (n8n).")
    previous_secret = EncryptedTextField(blank=True, default="")
    previous_secret_expires_at = models.DateTimeField(null=True, blank=True)
    event_filter = models.JSONField(
        default=list, blank=True, help_text='Event names to send, e.g. ["order.status_changed"]; empty = all.'
    )
    rate_limit = models.CharField(max_length=20, blank=True, default="", help_text="requests/s/burst, e.g. 2/50.")
    disabled_reason = models.CharField(max_length=255, blank=True, default="")
    paused_until = models.DateTimeField(null=True, blank=True)
    consecutive_failures = models.PositiveIntegerField(default=0)
    last_success_at = models.DateTimeField(null=True, blank=True)
    last_failure_at = models.DateTimeField(null=True, blank=True)
    # Fingerprints (never the values) of what sync_bootstrap last applied per field: tells an env change, which it
    # applies, from an edit made in the admin (or a 410 disabling), which it keeps and reports.
    bootstrap_applied = models.JSONField(default=dict, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.name} ({self.kind})"

    def wants(self, event_name: str) -> bool:
        return not self.event_filter or event_name in self.event_filter

    def clean(self) -> None:
        """The shared validator (admin form, bootstrap): a typo is refused here, not found at delivery."""
        from integrations.config import validate_integration_config  # it imports this module

        validate_integration_config(
            kind=self.kind, endpoint=self.endpoint, secret=self.secret, rate_limit=self.rate_limit
        )


class SequenceCounter(models.Model):
    """Per (integration, object) counter; incremented with INSERT … ON CONFLICT so commits serialise per object."""

    # No index of its own: uniq_sequence_counter leads with it.
    integration = models.ForeignKey(Integration, on_delete=models.CASCADE, db_index=False)
    content_type = models.ForeignKey(ContentType, on_delete=models.CASCADE)
    object_id = models.CharField(max_length=64)
    last = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["integration", "content_type", "object_id"], name="uniq_sequence_counter")
        ]

    def __str__(self) -> str:
        return f"{self.content_type_id}:{self.object_id} → {self.last}"


class IntegrationSync(models.Model):
    """One event for one integration and one object; attempts are SyncAttempt rows."""

    # No single-column indexes on these two: uniq_sync_sequence and sync_object_idx lead with them, and every index
    # is written on each of the outbox's inserts.
    integration = models.ForeignKey(Integration, on_delete=models.CASCADE, related_name="syncs", db_index=False)
    content_type = models.ForeignKey(ContentType, on_delete=models.PROTECT, db_index=False)
    object_id = models.CharField(max_length=64)
    content_object = GenericForeignKey("content_type", "object_id")
    event_type = models.CharField(max_length=20, choices=EventType.choices)
    event_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    sequence = models.BigIntegerField()
    payload = models.JSONField(default=dict, blank=True)
    changes = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=20, choices=SyncStatus.choices, default=SyncStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    claim_token = models.UUIDField(null=True, blank=True, editable=False)
    # Set by a claim on a due row that an earlier open row of its object holds back, so later claims pass over it
    # through sync_claim_idx; cleared when that object's lowest open row closes (trigger, migration 0011).
    waiting = models.BooleanField(default=False, db_default=False, editable=False)
    last_error = models.TextField(blank=True, default="")
    remote_id = models.CharField(max_length=64, blank=True, default="")
    superseded_by = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+", db_index=False
    )
    # Written by bitrix_backfill (onboarding): a `created` event for an object that existed before the integration.
    # n8n bodies carry it as "backfill": true; the command counts its progress by it.
    backfill = models.BooleanField(default=False, db_default=False, editable=False)
    occurred_at = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)
    synced_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["integration", "content_type", "object_id"],
                condition=Q(event_type="created"),
                name="uniq_created_sync_per_object",
            ),
            models.UniqueConstraint(
                fields=["integration", "content_type", "object_id", "sequence"], name="uniq_sync_sequence"
            ),
        ]
        indexes = [
            # The dispatcher's hot path: only open rows are indexed, so history size does not slow it down.
            models.Index(
                fields=["next_attempt_at"], name="sync_due_idx", condition=Q(status__in=["pending", "retrying"])
            ),
            models.Index(fields=["lease_expires_at"], name="sync_lease_idx", condition=Q(status="in_progress")),
            # The claim: open rows of one integration in id order, and the earlier open row of the same object (the
            # head-of-line check) found without walking the object's finished history.
            models.Index(
                fields=["integration", "id"],
                name="sync_claim_idx",
                condition=Q(status__in=OPEN_STATUSES, waiting=False),
            ),
            models.Index(
                fields=["integration", "content_type", "object_id", "sequence"],
                name="sync_waiting_idx",
                condition=Q(waiting=True),
            ),
            models.Index(
                fields=["integration", "content_type", "object_id", "sequence"],
                name="sync_open_object_idx",
                condition=Q(status__in=OPEN_STATUSES),
            ),
            models.Index(fields=["content_type", "object_id", "integration", "sequence"], name="sync_object_idx"),
            models.Index(fields=["status", "updated_at"], name="sync_status_updated_idx"),
            # For SET_NULL when retention deletes rows; only the few superseded rows are indexed.
            models.Index(
                fields=["superseded_by"], name="sync_superseded_by_idx", condition=Q(superseded_by__isnull=False)
            ),
        ]

    def __str__(self) -> str:
        return f"{self.event_name} #{self.object_id} → {self.integration.name} [{self.status}]"

    @property
    def object_type(self) -> str:
        return self.content_type.model

    @property
    def event_name(self) -> str:
        return f"{self.object_type}.{self.event_type}"


class SyncStatusTally(models.Model):
    """Counts of finished IntegrationSync rows by integration and status, kept by database triggers (migration 0009).

    Each status change appends a +1/-1 row (appending never waits on a lock); integrations_tally_compact() folds them
    into one row per (integration, status). The sum over rows is the count, so /metrics never scans the history."""

    integration_id = models.IntegerField()  # no foreign key: rows outlive a deleted integration until compacted
    status = models.CharField(max_length=20)
    n = models.BigIntegerField()

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.integration_id} {self.status} {self.n:+d}"


class AttemptOutcome(models.TextChoices):
    OK = "ok", "OK"
    RETRYABLE = "retryable", "Retryable"
    TERMINAL = "terminal", "Terminal"
    UNKNOWN = "unknown", "Unknown (maybe applied)"
    DEFERRED = "deferred", "Deferred (not counted)"


class SyncAttempt(models.Model):
    sync = models.ForeignKey(IntegrationSync, on_delete=models.CASCADE, related_name="attempt_rows")
    number = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    duration_ms = models.PositiveIntegerField(default=0)
    request_summary = models.CharField(max_length=500, blank=True, default="")
    http_status = models.PositiveIntegerField(null=True, blank=True)
    response_excerpt = models.TextField(blank=True, default="")
    error_class = models.CharField(max_length=100, blank=True, default="")
    error_message = models.TextField(blank=True, default="")
    outcome = models.CharField(max_length=20, choices=AttemptOutcome.choices)
    worker = models.CharField(max_length=100, blank=True, default="")
    # The delivery round's claim token; its requests carry it as X-Request-Id ("sync:<token>").
    claim_token = models.UUIDField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"attempt {self.number} of sync {self.sync_id}: {self.outcome}"


class ExternalLink(models.Model):
    """The only source of truth for "this object already has remote id N" (written with the synced create)."""

    integration = models.ForeignKey(Integration, on_delete=models.CASCADE, related_name="links")
    content_type = models.ForeignKey(ContentType, on_delete=models.PROTECT)
    object_id = models.CharField(max_length=64)
    remote_id = models.CharField(max_length=64)
    remote_state = models.JSONField(default=dict, blank=True, help_text="Last state we wrote (echo detection, ids).")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["integration", "content_type", "object_id"], name="uniq_link_object"),
            models.UniqueConstraint(fields=["integration", "content_type", "remote_id"], name="uniq_link_remote"),
        ]

    def __str__(self) -> str:
        return f"{self.content_type.model} {self.object_id} → {self.remote_id}"


class InboundStatus(models.TextChoices):
    RECEIVED = "received", "Received"
    PROCESSING = "processing", "Processing"  # claimed by a worker (claim time in processed_at); no lock held
    PROCESSED = "processed", "Processed"
    IGNORED = "ignored", "Ignored"
    DUPLICATE = "duplicate", "Duplicate"
    REJECTED = "rejected", "Rejected"
    FAILED = "failed", "Failed"


class InboundWebhook(models.Model):
    """Every request to the inbound Bitrix24 view, stored before anything else happens to it."""

    received_at = models.DateTimeField(auto_now_add=True, db_index=True)
    remote_addr = models.GenericIPAddressField(null=True, blank=True)
    method = models.CharField(max_length=10)
    path = models.CharField(max_length=255)
    query = models.JSONField(default=dict, blank=True)
    headers = models.JSONField(default=dict, blank=True)
    body = models.TextField(blank=True, default="")
    body_truncated = models.BooleanField(default=False)
    content_type = models.CharField(max_length=150, blank=True, default="")
    authenticated = models.BooleanField(default=False)
    event = models.CharField(max_length=100, blank=True, default="", db_index=True)
    remote_object = models.CharField(max_length=100, blank=True, default="", help_text="e.g. DEAL_123")
    dedupe_key = models.CharField(max_length=200, null=True, blank=True, unique=True)
    status = models.CharField(max_length=20, choices=InboundStatus.choices, default=InboundStatus.RECEIVED)
    error = models.TextField(blank=True, default="")
    result = models.JSONField(default=dict, blank=True)
    processed_at = models.DateTimeField(null=True, blank=True)
    # When the requeue sweep last sent its Celery message: a row waiting in a long queue is not sent again and again.
    queued_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["status", "received_at"], name="inbound_status_idx")]

    def __str__(self) -> str:
        return f"{self.event or 'call'} {self.remote_object} [{self.status}]"


class CatchupState(models.Model):
    """Bitrix24 catch-up (integrations/inbound/catchup.py): deal changes read and applied up to `cursor`."""

    integration = models.OneToOneField(Integration, on_delete=models.CASCADE, related_name="catchup")
    cursor = models.DateTimeField(
        null=True, blank=True, help_text="DATE_MODIFY (portal clock) up to which every change was read and applied."
    )
    last_run_at = models.DateTimeField(null=True, blank=True)
    last_complete_at = models.DateTimeField(null=True, blank=True, help_text="Last run that read every page.")
    last_outcome = models.CharField(max_length=255, blank=True, default="")
    last_calls = models.PositiveIntegerField(default=0)
    last_read = models.PositiveIntegerField(default=0)
    last_applied = models.PositiveIntegerField(default=0)
    calls_total = models.PositiveBigIntegerField(default=0)
    applied_total = models.PositiveBigIntegerField(default=0)

    def __str__(self) -> str:
        return f"catch-up of {self.integration_id} at {self.cursor}"


class Heartbeat(models.Model):
    """Last-seen time of each worker and each periodic task (liveness for the status API)."""

    name = models.CharField(max_length=200, unique=True)
    kind = models.CharField(max_length=20)  # worker | beat | task
    seen_at = models.DateTimeField()
    info = models.JSONField(default=dict, blank=True)

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}"


__all__ = ["ContentType"]
