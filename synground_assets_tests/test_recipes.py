"""Recipe files: the built-in one loads; a broken one fails naming the recipe, field and fix."""

import pytest

from synground_assets.recipes import DEFAULT_RECIPE, RecipeError, load_recipe_book, shard_index

GOOD_ROLES = """
    roles:
      concepts: {adapter: shapes}
      describer: {adapter: shapes}
      image_generator: {adapter: shapes}
      phrase_extractor: {adapter: shapes}
      detector: {adapter: shapes}
"""


def write(tmp_path, text):
    path = tmp_path / "recipes.yaml"
    path.write_text(text)
    return path


def test_builtin_book_has_the_default_recipe():
    book = load_recipe_book()
    recipe = book.get(DEFAULT_RECIPE)
    assert recipe.description_source == "concept2text"
    assert recipe.shard_size == 64
    assert book.shard_keys()[:2] == ["00000", "00001"]


@pytest.mark.parametrize(
    "fields, message",
    [
        ("description_source: image2txt", "recipe 'bad', field 'description_source': expected one of concept2text"),
        ("description_source: concept2text\n    shard_size: -3", "field 'shard_size': expected an integer >= 1, got -3"),
        ("description_source: concept2text\n    min_yield: 1.5", "field 'min_yield': expected a number between 0 and 1"),
        ("description_source: concept2text\n    shard_sise: 3", "unknown field(s) shard_sise"),
        ("description_source: concept2text\n    num_shards: 99", "field 'num_shards': expected at most max_shards=8"),
    ],
)
def test_broken_recipe_names_recipe_field_and_expected_value(tmp_path, fields, message):
    path = write(tmp_path, f"max_shards: 8\nrecipes:\n  bad:\n    {fields}\n{GOOD_ROLES}")
    with pytest.raises(RecipeError) as error:
        load_recipe_book(path)
    assert message in str(error.value)
    assert str(path) in str(error.value)


def test_missing_role_is_named(tmp_path):
    path = write(tmp_path, "recipes:\n  bad:\n    description_source: concept2text\n    roles:\n      concepts: {adapter: shapes}\n")
    with pytest.raises(RecipeError, match="recipe 'bad', field 'roles': missing role 'describer'"):
        load_recipe_book(path)


def test_bad_role_field_is_named(tmp_path):
    roles = GOOD_ROLES.replace("detector: {adapter: shapes}", "detector: {adapter: shapes, dtype: float8}")
    path = write(tmp_path, f"recipes:\n  bad:\n    description_source: concept2text\n{roles}")
    with pytest.raises(RecipeError, match="recipe 'bad', role 'detector', field 'dtype': expected one of float32"):
        load_recipe_book(path)


def test_invalid_yaml_and_missing_file(tmp_path):
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe_book(write(tmp_path, "recipes: [unclosed"))
    with pytest.raises(RecipeError, match="does not exist"):
        load_recipe_book(tmp_path / "nope.yaml")


def test_unknown_recipe_lists_the_known_ones():
    with pytest.raises(RecipeError, match="no recipe named 'shapez'; known recipes: .*shapes"):
        load_recipe_book().get("shapez")


def test_shard_keys_are_five_digits():
    assert shard_index("00012") == 12
    with pytest.raises(RecipeError, match="five digits"):
        shard_index("12")
