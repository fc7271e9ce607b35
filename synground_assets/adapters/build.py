"""Build the adapter a recipe names for a role, from its row of the catalog (`roles/catalog.py`).

The adapter's module is imported here, on first use: a recipe that uses only the shapes world never
imports transformers or diffusers.
"""

from __future__ import annotations

import importlib
from typing import Any

from synground_assets.config.recipes import RecipeError, RoleSpec
from synground_assets.roles import catalog
from synground_assets.roles.options import option_problems


def build_role(role: str, spec: RoleSpec, recipe: str = "?") -> Any:
    """Instantiate the adapter a recipe names for a role; errors name the recipe and the fix."""
    entry = catalog.find(role, spec.adapter)
    if entry is None:
        raise RecipeError(f"recipe {recipe!r}, role {role!r}: unknown adapter {spec.adapter!r}; expected one of "
                          f"{', '.join(catalog.adapter_names(role))}")
    module_name, factory_name = entry.factory.split(":")
    factory = getattr(importlib.import_module(module_name), factory_name)
    if entry.takes_spec:  # the adapter checks its options against the catalog itself
        return factory(spec)
    problems = option_problems(spec.options, entry.options)
    if problems:
        raise RecipeError(f"recipe {recipe!r}, role {role!r}, " + "; ".join(problems))
    return factory(**spec.options)
