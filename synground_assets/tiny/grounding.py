"""Tiny grounding models of the shapes world: the random-init BLIP-ITM and ALBEF that the shapes
recipe fine-tunes (their builders live beside their adapters, `roles/grounding_*.py`)."""

from __future__ import annotations

from pathlib import Path


def build_blip_itm_shapes(folder: Path) -> None:
    """The random-init BLIP-ITM that the shapes recipe fine-tunes (`roles/grounding_blip.py`)."""
    from synground_assets.roles.grounding_blip import build_tiny_blip

    build_tiny_blip(folder)


def build_albef_shapes(folder: Path) -> None:
    """A random-init ALBEF with the shapes vocabulary (`roles/grounding_albef.py`), the ALBEF peer of
    blip-itm-shapes."""
    from synground_assets.roles.grounding_albef import build_tiny_albef

    build_tiny_albef(folder)


BUILDERS = {"blip-itm-shapes": build_blip_itm_shapes, "albef-shapes": build_albef_shapes}
