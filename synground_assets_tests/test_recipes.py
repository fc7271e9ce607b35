"""Recipe files: the built-in one loads; a broken one fails naming the recipe, field and fix."""

import pytest

from synground_assets.config.recipes import DEFAULT_RECIPE, RecipeError, TrainingSettings, load_recipe_book, shard_index

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
        (
            "description_source: concept2text\n    shard_size: -3",
            "field 'shard_size': expected an integer >= 1, got -3",
        ),
        (
            "description_source: concept2text\n    min_yield: 1.5",
            "field 'min_yield': expected a number between 0 and 1",
        ),
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
    path = write(
        tmp_path,
        "recipes:\n  bad:\n    description_source: concept2text\n    roles:\n      concepts: {adapter: shapes}\n",
    )
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


@pytest.mark.parametrize(
    "block, message",
    [
        (
            "training: {learning_rate: fast}",
            "field 'training.learning_rate': training setting 'learning_rate': expected float, got 'fast'",
        ),
        ("training: {batch_size: 1}", "field 'training.batch_size': TrainConfig.batch_size must be at least 2"),
        ("training: {amp_dtype: float8}", "field 'training.amp_dtype': TrainConfig.amp_dtype must be one of bfloat16"),
        (
            "training: {learning_rat: 0.1}",
            "field 'training.learning_rat': unknown training setting (did you mean 'learning_rate'?)",
        ),
        (
            "training: {held_out: 1.5}",
            "field 'training.held_out': expected shapes_test or a fraction in [0, 1), got 1.5",
        ),
        (
            "training: {held_out: coco}",
            "field 'training.held_out': expected shapes_test or a fraction in [0, 1), got 'coco'",
        ),
        ("training: {held_out_queries: 0}", "field 'training.held_out_queries': expected an integer >= 1, got 0"),
        (
            "training: {nproc_per_node: all}",
            "field 'training.nproc_per_node': expected auto or an integer >= 1, got 'all'",
        ),
        ("training: [1, 2]", "recipe 'bad', field 'training': expected a mapping"),
        (
            "real_data: {source: coco, regions: r.json, images: img}",
            "field 'real_data.source': expected one of visual_genome, got 'coco'",
        ),
        ("real_data: {source: visual_genome, images: img}", "field 'real_data.regions': expected a string, got None"),
        (
            "real_data: {source: visual_genome, regions: r.json, images: img, ratio: 2}",
            "field 'real_data.ratio': expected a number between 0 and 1, got 2",
        ),
        (
            "real_data: {source: visual_genome, regions: r.json, images: img, max_images: 0}",
            "field 'real_data.max_images': expected an integer >= 1, got 0",
        ),
        (
            "real_data: {source: visual_genome, regions: r.json, images: img, sorce: x}",
            "unknown field(s) real_data.sorce",
        ),
    ],
)
def test_a_bad_training_or_real_data_block_fails_at_load_naming_the_field(tmp_path, block, message):
    path = write(tmp_path, f"recipes:\n  bad:\n    description_source: concept2text\n    {block}\n{GOOD_ROLES}")
    with pytest.raises(RecipeError) as error:
        load_recipe_book(path)
    assert str(error.value).startswith(f"{path}: recipe 'bad'")
    assert message in str(error.value)


def test_training_and_real_data_are_typed(tmp_path):
    block = ("training: {max_steps: 10, held_out: 0.1, nproc_per_node: 2, learning_rate: 1}\n"
             "    real_data: {source: visual_genome, regions: r.json, images: img, ratio: 0.25}")
    recipe = load_recipe_book(
        write(tmp_path, f"recipes:\n  ok:\n    description_source: concept2text\n    {block}\n{GOOD_ROLES}")
    ).get("ok")
    assert recipe.training.config.max_steps == 10 and recipe.training.config.learning_rate == 1.0
    assert recipe.training.config.real_data_ratio == 0.25  # from real_data.ratio
    assert (recipe.training.held_out, recipe.training.held_out_queries, recipe.training.nproc_per_node) == (0.1, 256, 2)
    assert (recipe.real_data.regions, recipe.real_data.images, recipe.real_data.max_images) == ("r.json", "img", None)
    bare = load_recipe_book(
        write(tmp_path, f"recipes:\n  ok:\n    description_source: concept2text\n{GOOD_ROLES}")
    ).get("ok")
    assert bare.real_data is None and bare.training == TrainingSettings() and bare.training.held_out == 0.05
    assert bare.training.config == type(bare.training.config)()


def test_every_built_in_recipe_has_a_valid_training_config():
    for recipe in load_recipe_book().recipes.values():
        assert recipe.training.config.batch_size >= 2
    assert load_recipe_book().get("paper-image2text").training.config.eval_protocol == "amc"


@pytest.mark.parametrize("name", ["..", ".", "'../../x'", "/abs", "a/b", "''", "a|b", ".hidden", "-dash", "a...b",
                                  "a....", "x..."])
def test_a_recipe_name_that_is_not_a_plain_folder_name_fails_at_load(tmp_path, name):
    """Issue 19, item 5: such names wrote outside the data root ('..', '../../x', '/abs') or inside it
    but were never indexed ('a/b', ''). Issue 30: 'a...b' passed and only Dagster's partition key
    check caught it ('...' is its range separator)."""
    path = write(tmp_path, f"recipes:\n  {name}:\n    description_source: concept2text\n{GOOD_ROLES}")
    with pytest.raises(RecipeError, match=r"recipes: recipe name .*: expected letters, digits, '_', '.' or '-'"):
        load_recipe_book(path)


def test_plain_recipe_names_load(tmp_path):
    names = ["shapes", "paper-v1.5_x", "7b", "a..b"]
    text = "recipes:\n" + "".join(f"  {name}:\n    description_source: concept2text\n{GOOD_ROLES}" for name in names)
    assert sorted(load_recipe_book(write(tmp_path, text)).recipes) == sorted(names)


def test_shard_size_and_max_shards_have_upper_bounds(tmp_path):
    recipe = "    description_source: concept2text\n    shard_size: 20000\n"
    with pytest.raises(RecipeError, match=r"'shard_size': expected an integer <= 10000 \(item ids have four digits\)"):
        load_recipe_book(write(tmp_path, f"recipes:\n  big:\n{recipe}{GOOD_ROLES}"))
    recipe = "    description_source: concept2text\n"
    with pytest.raises(RecipeError, match=r"'max_shards': expected an integer <= 100000 \(shard keys have five"):
        load_recipe_book(write(tmp_path, f"max_shards: 200000\nrecipes:\n  ok:\n{recipe}{GOOD_ROLES}"))


ENSEMBLE = GOOD_ROLES.replace("detector: {adapter: shapes}", """detector:
        - {adapter: shapes, name: first, options: {corrupt_fraction: 0.3, corrupt_seed: 1}}
        - {adapter: shapes, options: {corrupt_fraction: 0.3, corrupt_seed: 2}}""")


def test_a_list_of_detectors_is_an_ensemble_and_one_detector_stays_a_mapping(tmp_path):
    quality = "quality: {ensemble: {min_agreeing: 2, iou: 0.6}}"
    text = f"recipes:\n  one:\n    description_source: concept2text\n{GOOD_ROLES}\n" \
           f"  many:\n    description_source: concept2text\n    {quality}\n{ENSEMBLE}"
    book = load_recipe_book(write(tmp_path, text))
    one, many = book.get("one"), book.get("many")
    assert one.ensemble == () and one.detectors() == [("detector", one.roles["detector"])]
    assert [name for name, _ in many.detectors()] == ["first", "shapes-1"]
    assert [spec.options["corrupt_seed"] for _, spec in many.detectors()] == [1, 2]
    assert many.roles["detector"] is many.ensemble[0][1]  # the first detector plays the role's single-spec readers


@pytest.mark.parametrize("detector, quality, message", [
    ("detector: [{adapter: shapes}]", "", "a list names an ensemble of at least two detectors, got 1"),
    ("detector: [{adapter: shapes, name: x}, {adapter: shapes, name: x}]", "",
     "detector name(s) x repeat; give each entry its own `name`"),
    ("detector: [{adapter: shapes}, {adapter: shapes, options: {corrupt_fraction: 2}}]", "",
     "role 'detector', entry 'shapes-1', option 'corrupt_fraction'"),
    ("detector: [{adapter: shapes}, {adapter: shapes}]", "quality: {ensemble: {min_agreeing: 3}}",
     "field 'quality.ensemble.min_agreeing': expected at most the 2 detectors of the recipe, got 3"),
    ("detector: {adapter: shapes}", "quality: {ensemble: {min_agreeing: 1}}",
     "field 'quality.ensemble': applies to several detectors"),
    ("detector: [{adapter: shapes}, {adapter: shapes}]", "box_source: gligen",
     "an ensemble of detectors needs box_source: detector"),
    ("detector: [{adapter: shapes}, {adapter: shapes}]", "quality: {ensemble: {iou: 0}}",
     "quality.ensemble.iou: expected a number in (0, 1]"),
])
def test_a_bad_ensemble_fails_at_load_naming_the_field(tmp_path, detector, quality, message):
    roles = GOOD_ROLES.replace("detector: {adapter: shapes}", detector)
    path = write(tmp_path, f"recipes:\n  bad:\n    description_source: concept2text\n    {quality}\n{roles}")
    with pytest.raises(RecipeError) as error:
        load_recipe_book(path)
    assert message in str(error.value) and "recipe 'bad'" in str(error.value)
