"""The peer homepage on Django: ``hypercorn examples.peers.django_asgi:application``."""

from __future__ import annotations

import os

os.environ["DJANGO_SETTINGS_MODULE"] = "examples.peers.django_settings"

from django.core.asgi import get_asgi_application  # type: ignore[import-untyped]

application = get_asgi_application()
