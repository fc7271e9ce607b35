"""Declared options of an adapter: name, type and range, checked when the recipe file loads.

An adapter's `options:` in a recipe are checked against its declaration before any asset runs, so a
typo or a bad value fails `dagster definitions validate` with the file, recipe, role, option and
the expected value, instead of a bare `ValueError` at the first item. The declarations live in one
table, `roles/catalog.py`, apart from the adapters, so that validating a recipe never imports torch,
transformers or diffusers.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

KINDS = ("int", "number", "bool", "str", "list")


@dataclass(frozen=True)
class Option:
    """One option an adapter takes. Bounds are inclusive unless `above` (exclusive lower bound)."""

    name: str
    kind: str  # one of KINDS
    minimum: float | None = None
    maximum: float | None = None
    above: float | None = None
    multiple_of: int | None = None
    required: bool = False

    def expected(self) -> str:
        """'an integer >= 1', 'a number in [0, 1]', ... as an error message shows it."""
        noun = {"int": "an integer", "number": "a number", "bool": "true or false", "str": "a string",
                "list": "a list"}[self.kind]
        if self.multiple_of:
            noun += f" multiple of {self.multiple_of}"
        lower = f"> {self.above:g}" if self.above is not None else (
            f">= {self.minimum:g}" if self.minimum is not None else None)
        if lower and self.maximum is not None:
            bracket = "(" if self.above is not None else "["
            low = self.above if self.above is not None else self.minimum
            return f"{noun} in {bracket}{low:g}, {self.maximum:g}]"
        if lower:
            return f"{noun} {lower}"
        if self.maximum is not None:
            return f"{noun} <= {self.maximum:g}"
        return noun

    def accepts(self, value: Any) -> bool:
        if self.kind == "bool":
            return isinstance(value, bool)
        if self.kind == "str":
            return isinstance(value, str) and bool(value.strip())
        if self.kind == "list":
            return isinstance(value, list)
        numeric = (int,) if self.kind == "int" else (int, float)
        if isinstance(value, bool) or not isinstance(value, numeric) or value != value:  # NaN != NaN
            return False
        return ((self.minimum is None or value >= self.minimum) and (self.above is None or value > self.above)
                and (self.maximum is None or value <= self.maximum)
                and (not self.multiple_of or value % self.multiple_of == 0))


def option_problems(options: Mapping[str, Any], declared: Sequence[Option]) -> list[str]:
    """"option 'x': expected ..., got ..." for every unknown, missing or bad option; empty when all are fine."""
    by_name = {option.name: option for option in declared}
    problems = []
    for name, value in options.items():
        option = by_name.get(str(name))
        if option is None:
            close = difflib.get_close_matches(str(name), list(by_name), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            known = ", ".join(sorted(by_name)) or "none"
            problems.append(f"option {str(name)!r}: unknown option{hint}; "
                            f"expected one of the adapter's options: {known}")
        elif not option.accepts(value):
            problems.append(f"option {option.name!r}: expected {option.expected()}, got {value!r}")
    for option in declared:
        if option.required and option.name not in options:
            problems.append(f"option {option.name!r}: expected {option.expected()} (required), got nothing")
    return problems
