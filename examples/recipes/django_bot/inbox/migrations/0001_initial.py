"""The inbox tables (written by ``makemigrations``, then tidied)."""

from __future__ import annotations

from typing import ClassVar

from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    dependencies: ClassVar[list[tuple[str, str]]] = []

    operations: ClassVar[list[migrations.operations.base.Operation]] = [
        migrations.CreateModel(
            name="InboundMessage",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("wamid", models.CharField(max_length=128, unique=True)),
                ("sender", models.CharField(max_length=64)),
                ("sender_name", models.CharField(blank=True, max_length=256)),
                ("body", models.TextField()),
                ("received_at", models.DateTimeField()),
            ],
        ),
        migrations.CreateModel(
            name="StatusUpdate",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("wamid", models.CharField(max_length=128, unique=True)),
                ("status", models.CharField(max_length=32)),
                ("error_code", models.IntegerField(null=True)),
            ],
        ),
    ]
