"""Recipes: one row of the paper's tables each, read from one YAML file that users edit.

The built-in file is `synground_assets/recipes.yaml`; `SYNGROUND_RECIPES=/path/to/recipes.yaml`
points the code location at another one. Loading validates every field and fails with an error
naming the file, the recipe, the field and the expected value.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from synground_assets.config import settings
from synground_assets.grounding.config import ModelLimits, TrainConfig
from synground_assets.quality.settings import EnsembleSettings, QualitySettings, QualitySettingsError
from synground_assets.roles.base import ROLE_NAMES
from synground_assets.roles.spec import RecipeError, RoleSpec

BUILTIN_RECIPES = Path(__file__).with_name("recipes.yaml")
DEFAULT_RECIPE = "shapes"

DESCRIPTION_SOURCES = ("concept2text", "image2text", "text2text", "concatenation")
BOX_SOURCES = ("detector", "gligen")
DTYPES = ("float32", "float16", "bfloat16")
DEVICES = ("cpu", "cuda", "auto")
HELD_OUT_BENCHMARKS = ("shapes_test",)  # `training.held_out` names one of these, or is a fraction of items
REAL_DATA_SOURCES = ("visual_genome",)
# A recipe's name is a folder of the data root and a part of partition keys (`<recipe>|<shard>`), where
# "..." is Dagster's range separator (dagster/_core/definitions/partitions/utils/base.py:
# INVALID_PARTITION_SUBSTRINGS): refused here with the rest, not left to Dagster's error.
RECIPE_NAME = re.compile(r"^(?!.*\.\.\.)[A-Za-z0-9][A-Za-z0-9_.-]*$")
MAX_SHARD_SIZE = 10_000  # item ids number items with four digits (items.py)
MAX_SHARDS = 100_000  # shard keys are five digits


@dataclass(frozen=True)
class TrainingSettings:
    """A recipe's `training:` block: the TrainConfig it trains with (the real-data ratio included),
    plus the settings the fine-tuning asset reads itself."""

    config: TrainConfig = field(default_factory=TrainConfig)
    held_out: str | float = 0.05  # a benchmark of HELD_OUT_BENCHMARKS, or the share of items held out
    held_out_queries: int = 256  # queries of a held-out benchmark
    nproc_per_node: int | str = "auto"  # ranks on this node: an integer, or "auto" (every visible GPU, 1 on a CPU)


@dataclass(frozen=True)
class RealData:
    """A recipe's `real_data:` block: real triplets mixed into every training batch."""

    source: str  # one of REAL_DATA_SOURCES
    regions: str  # Visual Genome region_descriptions.json
    images: str  # the folder of Visual Genome images
    image_data: str | None = None  # image_data.json (image sizes), optional
    max_images: int | None = None  # read only the first entries
    ratio: float = 0.5  # share of each batch drawn from the real triplets


TRAINING_KEYS = tuple(f.name for f in dataclasses.fields(TrainingSettings) if f.name != "config")
TRAIN_CONFIG_KEYS = tuple(f.name for f in dataclasses.fields(TrainConfig))


@dataclass(frozen=True)
class Recipe:
    name: str
    description_source: str
    box_source: str
    roles: dict[str, RoleSpec]
    shard_size: int = 64
    num_shards: int = 4  # the dataset size the scheduled backfill fills
    min_yield: float = 0.5  # asset check: phrases with a box / phrases, per shard
    needs_gpu: bool = False
    notes: str = ""
    grounding_model: RoleSpec | None = None
    training: TrainingSettings = field(default_factory=TrainingSettings)
    real_data: RealData | None = None
    quality: QualitySettings = field(default_factory=QualitySettings)  # filters and thresholds, parsed at load
    # Several detectors (`roles.detector` written as a list): (name, spec) each, in recipe order; empty
    # for one detector. `roles["detector"]` is then the first of them (its batch size drives the stage).
    ensemble: tuple[tuple[str, RoleSpec], ...] = ()

    def detectors(self) -> list[tuple[str, RoleSpec]]:
        """(name, spec) of every detector of the box stage: the ensemble, else the one detector."""
        return list(self.ensemble) or [("detector", self.roles["detector"])]


@dataclass(frozen=True)
class RecipeBook:
    path: Path
    max_shards: int  # shard partition keys 00000 .. max_shards-1, shared by all recipes
    recipes: dict[str, Recipe]
    benchmarks: dict[str, dict[str, Any]]
    schedule: dict[str, Any]

    def get(self, name: str) -> Recipe:
        if name not in self.recipes:
            raise RecipeError(
                f"{self.path}: no recipe named {name!r}; known recipes: {', '.join(sorted(self.recipes))}"
            )
        return self.recipes[name]

    def shard_keys(self) -> list[str]:
        return [shard_key(i) for i in range(self.max_shards)]


def shard_key(index: int) -> str:
    return f"{index:05d}"


def shard_index(key: str) -> int:
    if not (len(key) == 5 and key.isdigit()):
        raise RecipeError(f"shard key must be five digits such as '00003', got {key!r}")
    return int(key)


class _Fields:
    """Reads one mapping of a recipe file, remembering where it is for error messages."""

    def __init__(self, path: Path, where: str, data: Any, prefix: str = ""):
        if not isinstance(data, dict):
            raise RecipeError(f"{path}: {where}{', field ' + repr(prefix[:-1]) if prefix else ''}: expected a mapping, "
                              f"got {type(data).__name__}")
        self.path, self.where, self.data, self.prefix = path, where, dict(data), prefix  # prefix: "training." etc.

    def fail(self, name: str, expected: str) -> RecipeError:
        got = self.data.get(name, "<missing>")
        return RecipeError(f"{self.path}: {self.where}, field {self.prefix + name!r}: expected {expected}, got {got!r}")

    def choice(self, name: str, choices: tuple[str, ...], default: str | None = None) -> str:
        value = self.data.pop(name, default)
        if value not in choices:
            self.data[name] = value
            raise self.fail(name, "one of " + ", ".join(choices))
        return value

    def integer(self, name: str, default: int, minimum: int = 1, maximum: int | None = None, why: str = "") -> int:
        value = self.data.pop(name, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            self.data[name] = value
            raise self.fail(name, f"an integer >= {minimum}")
        if maximum is not None and value > maximum:
            self.data[name] = value
            raise self.fail(name, f"an integer <= {maximum}{f' ({why})' if why else ''}")
        return value

    def optional_integer(self, name: str, minimum: int = 1) -> int | None:
        if self.data.get(name) is None:
            self.data.pop(name, None)
            return None
        return self.integer(name, 0, minimum)

    def fraction(self, name: str, default: float) -> float:
        value = self.data.pop(name, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            self.data[name] = value
            raise self.fail(name, "a number between 0 and 1")
        return float(value)

    def string(self, name: str, default: str | None = None, required: bool = False) -> str | None:
        value = self.data.pop(name, default)
        if (required and value is None) or (value is not None and not isinstance(value, str)):
            self.data[name] = value
            raise self.fail(name, "a string")
        return value

    def boolean(self, name: str, default: bool) -> bool:
        value = self.data.pop(name, default)
        if not isinstance(value, bool):
            self.data[name] = value
            raise self.fail(name, "true or false")
        return value

    def mapping(self, name: str) -> dict[str, Any]:
        value = self.data.pop(name, None) or {}
        if not isinstance(value, dict):
            self.data[name] = value
            raise self.fail(name, "a mapping")
        return value

    def done(self) -> None:
        if self.data:
            unknown = ", ".join(sorted(self.prefix + str(name) for name in self.data))
            raise RecipeError(f"{self.path}: {self.where}: unknown field(s) {unknown}; check the spelling")


def _role_spec(path: Path, where: str, data: Any) -> RoleSpec:
    fields = _Fields(path, where, data)
    spec = RoleSpec(
        adapter=fields.string("adapter", required=True),
        model=fields.string("model"),
        revision=fields.string("revision"),
        dtype=fields.choice("dtype", DTYPES, "float32"),
        device=fields.choice("device", DEVICES, "auto"),
        batch_size=fields.integer("batch_size", 8),
        options=fields.mapping("options"),
    )
    fields.done()
    return spec


def _detectors(path: Path, recipe: str, data: Any) -> tuple[RoleSpec, tuple[tuple[str, RoleSpec], ...]]:
    """`roles.detector`: one spec (a mapping), or a list of specs, each with an optional `name` (default
    `<adapter>-<position>`), for an ensemble. Returns (the first spec, the ensemble or ())."""
    if not isinstance(data, list):
        return _role_spec(path, f"recipe {recipe!r}, role 'detector'", data), ()
    if len(data) < 2:
        raise RecipeError(f"{path}: recipe {recipe!r}, role 'detector': a list names an ensemble of at least two "
                          f"detectors, got {len(data)}; write one detector as a mapping")
    members = []
    for position, entry in enumerate(data):
        where = f"recipe {recipe!r}, role 'detector', entry {position}"
        if not isinstance(entry, dict):
            raise RecipeError(f"{path}: {where}: expected a mapping (adapter, model, options, name), got {entry!r}")
        entry = dict(entry)
        name = entry.pop("name", None) or f"{entry.get('adapter')}-{position}"
        if not isinstance(name, str) or not RECIPE_NAME.match(name):
            raise RecipeError(f"{path}: {where}, field 'name': expected letters, digits, '_', '.' or '-', got {name!r}")
        members.append((name, _role_spec(path, where, entry)))
    names = [name for name, _ in members]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise RecipeError(f"{path}: recipe {recipe!r}, role 'detector': detector name(s) {', '.join(repeated)} "
                          "repeat; give each entry its own `name`")
    return members[0][1], tuple(members)


def _real_data(path: Path, name: str, data: dict[str, Any]) -> RealData | None:
    if not data:
        return None
    fields = _Fields(path, f"recipe {name!r}", data, prefix="real_data.")
    real = RealData(
        source=fields.choice("source", REAL_DATA_SOURCES),
        regions=fields.string("regions", required=True),
        images=fields.string("images", required=True),
        image_data=fields.string("image_data"),
        max_images=fields.optional_integer("max_images"),
        ratio=fields.fraction("ratio", 0.5),
    )
    fields.done()
    return real


def _training(path: Path, name: str, data: dict[str, Any], real: RealData | None) -> TrainingSettings:
    """The asset's own settings, then every other key as a TrainConfig field, each checked alone so that
    the error names it; the real-data ratio comes from `real_data.ratio`."""
    fields = _Fields(path, f"recipe {name!r}", data, prefix="training.")
    held_out = fields.data.pop("held_out", 0.05)
    if held_out not in HELD_OUT_BENCHMARKS and (
            isinstance(held_out, bool) or not isinstance(held_out, (int, float)) or not 0 <= held_out < 1):
        fields.data["held_out"] = held_out
        raise fields.fail("held_out", f"{' or '.join(HELD_OUT_BENCHMARKS)} or a fraction in [0, 1)")
    held_out_queries = fields.integer("held_out_queries", 256)
    nproc_per_node = fields.data.pop("nproc_per_node", "auto")
    if nproc_per_node != "auto" and (
            isinstance(nproc_per_node, bool) or not isinstance(nproc_per_node, int) or nproc_per_node < 1):
        fields.data["nproc_per_node"] = nproc_per_node
        raise fields.fail("nproc_per_node", "auto or an integer >= 1")
    settings = dict(fields.data)
    for key, value in settings.items():
        if key not in TRAIN_CONFIG_KEYS:
            close = difflib.get_close_matches(str(key), TRAIN_CONFIG_KEYS + TRAINING_KEYS, n=1)
            hint = (
                f" (did you mean {close[0]!r}?)"
                if close
                else f"; known: {', '.join(TRAINING_KEYS + TRAIN_CONFIG_KEYS)}"
            )
            raise RecipeError(f"{path}: recipe {name!r}, field 'training.{key}': unknown training setting{hint}")
        try:
            TrainConfig.from_dict({key: value})
        except ValueError as exc:
            raise RecipeError(f"{path}: recipe {name!r}, field 'training.{key}': {exc}") from exc
    if real is not None:
        settings["real_data_ratio"] = real.ratio
    return TrainingSettings(config=TrainConfig.from_dict(settings),
                            held_out=held_out if isinstance(held_out, str) else float(held_out),
                            held_out_queries=held_out_queries, nproc_per_node=nproc_per_node)


def _recipe(path: Path, name: str, data: Any) -> Recipe:
    fields = _Fields(path, f"recipe {name!r}", data)
    roles_data = fields.mapping("roles")
    roles, ensemble = {}, ()
    for role in ROLE_NAMES:
        if role not in roles_data:
            raise RecipeError(
                f"{path}: recipe {name!r}, field 'roles': missing role {role!r}; "
                f"every recipe names an adapter for {', '.join(ROLE_NAMES)}"
            )
        if role == "detector":
            roles[role], ensemble = _detectors(path, name, roles_data.pop(role))
        else:
            roles[role] = _role_spec(path, f"recipe {name!r}, role {role!r}", roles_data.pop(role))
    if roles_data:
        raise RecipeError(
            f"{path}: recipe {name!r}, field 'roles': unknown role(s) {', '.join(roles_data)}; "
            f"expected {', '.join(ROLE_NAMES)}"
        )
    grounding = fields.mapping("grounding_model")
    real = _real_data(path, name, fields.mapping("real_data"))
    training = _training(path, name, fields.mapping("training"), real)
    recipe = Recipe(
        name=name,
        description_source=fields.choice("description_source", DESCRIPTION_SOURCES),
        box_source=fields.choice("box_source", BOX_SOURCES, "detector"),
        roles=roles,
        shard_size=fields.integer("shard_size", 64, maximum=MAX_SHARD_SIZE, why="item ids have four digits"),
        num_shards=fields.integer("num_shards", 4),
        min_yield=fields.fraction("min_yield", 0.5),
        needs_gpu=fields.boolean("needs_gpu", False),
        notes=fields.string("notes", "") or "",
        grounding_model=_role_spec(path, f"recipe {name!r}, grounding_model", grounding) if grounding else None,
        training=training,
        real_data=real,
        ensemble=ensemble,
    )
    quality_block = fields.mapping("quality")
    fields.done()
    try:
        quality = QualitySettings.from_dict(quality_block)
    except QualitySettingsError as exc:
        raise RecipeError(f"{path}: recipe {name!r}, field {exc}") from exc
    recipe = dataclasses.replace(recipe, quality=quality)  # parsed once, here: every stage reads the typed settings
    _check_ensemble(path, recipe, quality)
    return recipe


def _check_ensemble(path: Path, recipe: Recipe, quality: QualitySettings) -> None:
    """`quality.ensemble` goes with a list of detectors, and asks no more agreeing detectors than there are."""
    where = f"{path}: recipe {recipe.name!r}"
    if recipe.ensemble and recipe.box_source != "detector":
        raise RecipeError(f"{where}, role 'detector': an ensemble of detectors needs box_source: detector, "
                          f"got {recipe.box_source!r}")
    if quality.ensemble is not None and not recipe.ensemble:
        raise RecipeError(f"{where}, field 'quality.ensemble': applies to several detectors; write "
                          "`roles.detector` as a list of detectors, or remove quality.ensemble")
    agreeing = (quality.ensemble or EnsembleSettings()).min_agreeing
    if recipe.ensemble and agreeing > len(recipe.ensemble):
        raise RecipeError(f"{where}, field 'quality.ensemble.min_agreeing': expected at most the "
                          f"{len(recipe.ensemble)} detectors of the recipe, got {agreeing}")


def _check_adapters(path: Path, recipe: Recipe) -> None:
    """Every role's adapter exists and its options match the adapter's declared ones (name, type,
    range): checked at load, so a mistake fails before any asset runs. Imports no model library."""
    from synground_assets.roles.catalog import role_problems  # torch-free: the catalog imports no adapter

    roles = [(role, f"role {role!r}", spec) for role, spec in recipe.roles.items() if role != "detector"]
    roles += [("detector", f"role 'detector', entry {name!r}" if recipe.ensemble else "role 'detector'", spec)
              for name, spec in recipe.detectors()]
    if recipe.grounding_model is not None:
        roles.append(("grounding_model", "role 'grounding_model'", recipe.grounding_model))
    for role, label, spec in roles:
        problems = role_problems(role, spec)
        if problems:
            raise RecipeError(f"{path}: recipe {recipe.name!r}, {label}, " + "; ".join(problems))


def _check_training_limits(path: Path, recipe: Recipe) -> None:
    """Training settings the grounding model cannot train with (GradCAM layer, patch grid, text
    length) are refused now, when the model's config is on this machine, rather than after a run."""
    spec = recipe.grounding_model
    data = _grounding_model_config(spec.model, spec.revision) if spec is not None and spec.model else None
    limits = ModelLimits.from_config(repr(spec.model), data) if data else None
    problems = limits.problems(recipe.training.config) if limits else []
    if problems:
        raise RecipeError(f"{path}: recipe {recipe.name!r}, field " + "; ".join(problems))


def _grounding_model_config(reference: str, revision: str | None) -> dict[str, Any] | None:
    """A model's config.json, read without loading the model: from a local folder or the local Hugging
    Face cache (never the network). None when it is not here yet (a `tiny:` build not made, a hub model
    not downloaded): training then refuses the same settings before its first step."""
    if reference.startswith(("tiny:", "package:")):
        return None
    local = Path(reference).expanduser()
    if local.is_dir():
        found = local / "config.json"
    else:
        from huggingface_hub import try_to_load_from_cache

        try:
            cached = try_to_load_from_cache(reference, "config.json", revision=revision)
        except ValueError:  # not a valid repo id either
            return None
        found = Path(cached) if isinstance(cached, str) else None
    try:
        return json.loads(found.read_text()) if found and found.is_file() else None
    except (OSError, json.JSONDecodeError):
        return None


def load_recipe_book(path: str | os.PathLike | None = None) -> RecipeBook:
    """Read and validate a recipe file (default: `$SYNGROUND_RECIPES`, else the built-in one)."""
    path = Path(path or settings.recipes_file() or BUILTIN_RECIPES)
    if not path.is_file():
        raise RecipeError(f"recipe file {path} does not exist; set SYNGROUND_RECIPES to an existing file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise RecipeError(f"{path}: not valid YAML: {exc}") from exc
    top = _Fields(path, "top level", data)
    max_shards = top.integer("max_shards", 64, maximum=MAX_SHARDS, why="shard keys have five digits")
    recipes_data = top.mapping("recipes")
    if not recipes_data:
        raise RecipeError(f"{path}: top level, field 'recipes': expected at least one recipe")
    recipes = {}
    for key, recipe_data in recipes_data.items():
        name = str(key)
        if not RECIPE_NAME.match(name):
            raise RecipeError(f"{path}: recipes: recipe name {name!r}: expected letters, digits, '_', '.' or '-', "
                              "starting with a letter or digit, without '...' (it names a data root folder and a "
                              "partition key)")
        recipe = _recipe(path, name, recipe_data)
        if recipe.num_shards > max_shards:
            raise RecipeError(
                f"{path}: recipe {name!r}, field 'num_shards': expected at most max_shards={max_shards}, "
                f"got {recipe.num_shards}"
            )
        _check_adapters(path, recipe)
        _check_training_limits(path, recipe)
        recipes[name] = recipe
    book = RecipeBook(
        path=path,
        max_shards=max_shards,
        recipes=recipes,
        benchmarks=top.mapping("benchmarks"),
        schedule=top.mapping("schedule"),
    )
    top.done()
    return book


@lru_cache(maxsize=None)
def _cached_book(path: str) -> RecipeBook:
    return load_recipe_book(path)


def recipe_book() -> RecipeBook:
    """The recipe book of this process (cached per file path)."""
    return _cached_book(str(settings.recipes_file() or BUILTIN_RECIPES))
