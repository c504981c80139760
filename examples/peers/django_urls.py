"""The peer homepage's Django views: ``/homepage``, and ``/rollout`` to say it is up."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse  # type: ignore[import-untyped]
from django.urls import path  # type: ignore[import-untyped]

from .homepage import PeerHomepage, parse_limit

_homepage = PeerHomepage()


async def homepage(request: HttpRequest) -> JsonResponse:
    limit = parse_limit(request.GET.get("limit"))
    if limit is None:
        return JsonResponse({"error": "limit must be 1 to 50"}, status=400)
    user = await request.session.aget("userId")
    return JsonResponse(await _homepage.page(limit, user if isinstance(user, str) else None))


async def ready(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"ready": True})


urlpatterns = [path("homepage", homepage), path("rollout", ready)]
