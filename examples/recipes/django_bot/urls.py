"""The project's own routes: the webhook is not one of them (the middleware answers it first)."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.urls import path

from examples.recipes.django_bot.inbox.models import InboundMessage


def inbox(request: HttpRequest) -> JsonResponse:
    latest = InboundMessage.objects.order_by("-id").values("sender", "body")[:10]
    return JsonResponse({"messages": InboundMessage.objects.count(), "latest": list(latest)})


urlpatterns = [path("", inbox, name="inbox")]
