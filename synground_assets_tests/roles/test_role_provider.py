"""The stages ask for their models through `RoleProvider`; the suite is one, method for method."""

from __future__ import annotations

import inspect

import pytest

from synground_assets.adapters.suite import ModelSuite
from synground_assets.pipeline.boxes import box_phrases
from synground_assets.pipeline.concepts import sample_concepts
from synground_assets.pipeline.descriptions import describe_items
from synground_assets.pipeline.images import draw_images
from synground_assets.pipeline.phrases import extract_phrases
from synground_assets.roles.base import RoleProvider

PROVIDED = sorted(name for name, value in vars(RoleProvider).items()
                  if callable(value) and not name.startswith("_"))


def test_the_protocol_names_what_the_stages_ask_for():
    assert PROVIDED == ["agreement_model", "concepts", "describer", "detector", "detectors", "image_generator",
                        "phrase_extractor", "verifier"]


@pytest.mark.parametrize("name", PROVIDED)
def test_the_suite_has_each_method_with_the_same_parameters(name):
    expected = list(inspect.signature(getattr(RoleProvider, name)).parameters)
    assert list(inspect.signature(getattr(ModelSuite, name)).parameters) == expected


@pytest.mark.parametrize("stage", [sample_concepts, describe_items, draw_images, extract_phrases, box_phrases])
def test_every_stage_types_its_suite_parameter(stage):
    assert inspect.signature(stage).parameters["suite"].annotation == "RoleProvider"
