"""Django settings of the peer homepage: the examples' settings, the peer's URLs."""

from __future__ import annotations

from examples.django_app.settings import *  # noqa: F403

ROOT_URLCONF = "examples.peers.django_urls"
