"""Item identity: ids and seeds derive from (recipe, shard, index) alone, so a shard is reproducible."""

from __future__ import annotations

import hashlib


def item_id(recipe: str, shard: int, index: int) -> str:
    return f"{recipe}:{shard:05d}:{index:04d}"


def phrase_id(item: str, index: int) -> str:
    return f"{item}:p{index}"


def box_id(phrase: str, index: int) -> str:
    return f"{phrase}:b{index}"


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from any parts; stable across processes and Python versions (no `hash()`)."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def item_seed(recipe: str, shard: int, index: int) -> int:
    return derive_seed("item", recipe, shard, index)
