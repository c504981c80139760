"""Realistic section values: ten product-like documents per section."""

from __future__ import annotations

from typing import Any

from examples.homepage.sources import SECTION_NAMES

__all__ = ["SECTION_NAMES", "VALUES", "documents"]


def documents(section: str, count: int = 10) -> list[dict[str, Any]]:
    return [
        {
            "id": f"{section}-{i:04d}",
            "name": f"{section} item {i}",
            "category": ["shoes", "books", "garden", "toys"][i % 4],
            "price": round(9.99 + i * 3.5, 2),
            "rating": 4.0 + (i % 10) / 10,
            "featured": True,
            "storeId": f"store-{i % 7}",
            "createdAt": f"2026-11-{(i % 28) + 1:02d}T12:00:00Z",
            "tags": ["new", "sale"][: 1 + i % 2],
        }
        for i in range(count)
    ]


VALUES: dict[str, list[dict[str, Any]]] = {name: documents(name) for name in SECTION_NAMES}
