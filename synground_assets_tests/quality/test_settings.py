"""The recipe's `quality:` block: defaults, and errors that name the field."""

import pytest

from synground_assets.quality.settings import AgreementSettings, QualitySettings, QualitySettingsError


def test_defaults_are_documented_values():
    settings = QualitySettings.from_dict({})
    assert settings == QualitySettings()
    assert settings.agreement is None and settings.regenerate_attempts == 1 and settings.dedup_descriptions


def test_agreement_true_takes_its_defaults():
    assert QualitySettings.from_dict({"agreement": True}).agreement == AgreementSettings()
    custom = QualitySettings.from_dict({"agreement": {"model": "tiny:blip-itm-shapes", "min_box_mass_lift": 2.0}})
    assert custom.agreement.model == "tiny:blip-itm-shapes" and custom.agreement.min_box_mass_lift == 2.0


@pytest.mark.parametrize("data, message", [
    ({"min_box_score": 1.5}, "quality.min_box_score: expected a number between 0 and 1"),
    ({"max_boxes_per_phrase": -1}, "quality.max_boxes_per_phrase: expected an integer >= 0 or null"),
    ({"regenerate_attempts": None}, "quality.regenerate_attempts: expected an integer >= 0"),
    ({"min_box_area": 0.5, "max_box_area": 0.4}, "min_box_area 0.5 is above max_box_area 0.4"),
    ({"nms": 0.5}, "unknown field(s) nms"),
    ({"agreement": {"min_itm": 0.5}}, "quality.agreement: unknown field(s) min_itm"),
    ({"agreement": {"batch_size": 0}}, "quality.agreement.batch_size: expected an integer >= 1"),
    ({"dedup_descriptions": "yes"}, "quality.dedup_descriptions: expected true or false"),
])
def test_bad_settings_name_the_field(data, message):
    with pytest.raises(QualitySettingsError, match=message.replace("(", r"\(").replace(")", r"\)")):
        QualitySettings.from_dict(data)


def test_a_bad_quality_block_fails_the_recipe_file_at_load(tmp_path):
    from pathlib import Path

    import yaml

    from synground_assets.config.recipes import BUILTIN_RECIPES, RecipeError, load_recipe_book

    book = yaml.safe_load(Path(BUILTIN_RECIPES).read_text())
    book["recipes"]["shapes"]["quality"] = {"min_box_score": 2}
    path = tmp_path / "recipes.yaml"
    path.write_text(yaml.safe_dump(book))
    with pytest.raises(RecipeError, match=r"recipe 'shapes', field quality.min_box_score"):
        load_recipe_book(path)
