"""post_save/post_delete of users and orders → outbox rows (services, admin and other ORM writes alike).

QuerySet.update() and bulk_* bypass these signals: write through the services.
"""

from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from integrations import outbox
from integrations.models import EventType
from orders.models import Order
from users.models import User


@receiver(post_save, sender=User, dispatch_uid="integrations_user_saved")
def user_saved(sender, instance: User, created: bool, raw: bool = False, **kwargs) -> None:
    if raw:
        return
    if instance.is_staff:  # staff accounts are not customers: never synced
        instance.mark_saved()
        return
    _record_save(instance, created)


@receiver(post_save, sender=Order, dispatch_uid="integrations_order_saved")
def order_saved(sender, instance: Order, created: bool, raw: bool = False, **kwargs) -> None:
    if not raw:
        _record_save(instance, created)


@receiver(post_delete, sender=Order, dispatch_uid="integrations_order_deleted")
@receiver(post_delete, sender=User, dispatch_uid="integrations_user_deleted")
def object_deleted(sender, instance, **kwargs) -> None:
    if isinstance(instance, User) and instance.is_staff:
        return
    outbox.record(instance, EventType.DELETED)


def _record_save(instance, created: bool) -> None:
    if created:
        outbox.record(instance, EventType.CREATED)
    else:
        changes = instance.changes()
        status_change = {k: v for k, v in changes.items() if k == "status"}
        other = {k: v for k, v in changes.items() if k != "status"}
        # A status change is its own event; order.updated only when other fields changed too.
        if status_change:
            outbox.record(instance, EventType.STATUS_CHANGED, changes=status_change)
        if other:
            outbox.record(instance, EventType.UPDATED, changes=other)
    instance.mark_saved()
