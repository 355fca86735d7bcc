"""Default periodic tasks (app.celery.BEAT_SCHEDULE) as django-celery-beat rows, editable in the admin."""

from django.db import migrations


def forward(apps, schema_editor):
    from integrations.beat_defaults import install_beat_schedule

    install_beat_schedule(apps)


class Migration(migrations.Migration):
    dependencies = [
        ("integrations", "0001_initial"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(forward, migrations.RunPython.noop)]
