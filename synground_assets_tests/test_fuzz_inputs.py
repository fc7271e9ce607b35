"""Issue 11: fuzzing of what users hand us. Any dataset file (RefCOCO+, Flickr30k Entities, Visual
Genome) or recipe file gives a result or a `DatasetError` / `RecipeError` naming the problem,
never another exception. Inputs are the official-format fixtures with one part replaced by an
arbitrary value, deleted, or with a stretch of text overwritten."""

from __future__ import annotations

import copy
import json
import os
import pickle
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from synground_assets.config.recipes import BUILTIN_RECIPES, RecipeError, load_recipe_book
from synground_assets.datasets.common import DatasetError
from synground_assets.datasets.flickr30k import read_flickr30k_entities
from synground_assets.datasets.refcoco import read_refcoco
from synground_assets.datasets.visual_genome import read_visual_genome
from synground_assets_tests.datasets.conftest import (
    FLICKR_ANNOTATION,
    FLICKR_ID,
    FLICKR_SENTENCES,
    refcoco_instances,
    refcoco_refs,
    vg_regions,
    write_flickr,
    write_refcoco,
    write_visual_genome,
)

# 60 examples per reader keep the suite fast; SYNGROUND_FUZZ_EXAMPLES=5000 fuzzes deeply by hand.
FUZZ = settings(
    max_examples=int(os.environ.get("SYNGROUND_FUZZ_EXAMPLES", 60)),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
scalars = (st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats()
           | st.text(max_size=12) | st.sampled_from(["", "..", "/etc/passwd", "a/../../b", "testA", "0"]))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=8)
text_noise = st.text(alphabet="[]/#<>&;:=\"' .\n\t0123456789-aeEN/x\x00é", max_size=12)


def paths_of(document, prefix=()):
    """Every place in a JSON-like document: (), ('images',), ('images', 0), ..."""
    yield prefix
    if isinstance(document, dict):
        for key, value in document.items():
            yield from paths_of(value, (*prefix, key))
    elif isinstance(document, list):
        for index, value in enumerate(document):
            yield from paths_of(value, (*prefix, index))


def mutate(data, document):
    """The document with one place replaced by an arbitrary value, or deleted."""
    document = copy.deepcopy(document)
    path = data.draw(st.sampled_from(list(paths_of(document))))
    replacement = data.draw(values)
    if not path:
        return replacement
    parent = document
    for step in path[:-1]:
        parent = parent[step]
    if data.draw(st.booleans()):
        del parent[path[-1]]
    else:
        parent[path[-1]] = replacement
    return document


def overwrite(data, text: str) -> str:
    start = data.draw(st.integers(0, len(text)))
    end = data.draw(st.integers(start, min(len(text), start + 20)))
    return text[:start] + data.draw(text_noise) + text[end:]


def reads_or_fails_cleanly(read, error=DatasetError):
    try:
        read()
    except error:
        pass  # a clear, named refusal is a valid answer


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@FUZZ
@given(data=st.data())
def test_refcoco_reader(folder, data):
    data_dir, images_dir = write_refcoco(folder / "refcoco", refcoco_refs(), refcoco_instances())
    if data.draw(st.booleans()):
        (data_dir / "refs(unc).p").write_bytes(pickle.dumps(mutate(data, refcoco_refs()), protocol=2))
    else:
        (data_dir / "instances.json").write_text(json.dumps(mutate(data, refcoco_instances())))
    split = data.draw(st.sampled_from(["testA", "testB", "val"]))
    reads_or_fails_cleanly(lambda: read_refcoco(data_dir, images_dir, split))


@FUZZ
@given(data=st.data())
def test_refcoco_reader_on_damaged_bytes(folder, data):
    data_dir, images_dir = write_refcoco(folder / "refcoco-bytes", refcoco_refs(), refcoco_instances())
    name = data.draw(st.sampled_from(["refs(unc).p", "instances.json"]))
    original = (data_dir / name).read_bytes()
    cut = data.draw(st.integers(0, len(original)))
    (data_dir / name).write_bytes(original[:cut] + data.draw(st.binary(max_size=16)))
    reads_or_fails_cleanly(lambda: read_refcoco(data_dir, images_dir, "testA"))


@FUZZ
@given(data=st.data())
def test_flickr30k_reader(folder, data):
    which = data.draw(st.sampled_from(["sentences", "annotation", "split_lines"]))
    original = {"sentences": FLICKR_SENTENCES, "annotation": FLICKR_ANNOTATION, "split_lines": f"{FLICKR_ID}\n"}
    root = write_flickr(folder / "flickr", **{which: overwrite(data, original[which])})
    reads_or_fails_cleanly(lambda: read_flickr30k_entities(root, "test"))


@FUZZ
@given(data=st.data())
def test_visual_genome_reader(folder, data):
    root = write_visual_genome(folder / "vg", regions=mutate(data, vg_regions()))
    if data.draw(st.booleans()):
        sizes = json.loads((root / "image_data.json").read_text())
        (root / "image_data.json").write_text(json.dumps(mutate(data, sizes)))
    reads_or_fails_cleanly(lambda: read_visual_genome(root / "region_descriptions.json", root / "images",
                                                      root / "image_data.json"))


BUILTIN_BOOK = yaml.safe_load(Path(BUILTIN_RECIPES).read_text())


@FUZZ
@given(data=st.data())
def test_recipe_loader(folder, data):
    path = folder / "recipes.yaml"
    if data.draw(st.booleans()):
        path.write_text(yaml.safe_dump(mutate(data, BUILTIN_BOOK)))
    else:
        path.write_text(overwrite(data, Path(BUILTIN_RECIPES).read_text()))
    reads_or_fails_cleanly(lambda: load_recipe_book(path), RecipeError)
