"""What the callbacks write: one row per message received, updated by the statuses of replies."""

from __future__ import annotations

from django.db import models


class InboundMessage(models.Model):
    #: WhatsApp's message id: unique, so a callback that runs again (a redelivery the worker could
    #: not tell apart, a retried callback) updates the row instead of adding a second one.
    wamid = models.CharField(max_length=128, unique=True)
    sender = models.CharField(max_length=64)
    sender_name = models.CharField(max_length=256, blank=True)
    body = models.TextField()
    received_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.sender}: {self.body[:40]}"


class StatusUpdate(models.Model):
    """The last status WhatsApp reported for a message the business sent."""

    wamid = models.CharField(max_length=128, unique=True)
    status = models.CharField(max_length=32)
    error_code = models.IntegerField(null=True)
