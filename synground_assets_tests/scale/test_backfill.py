"""The many-run backfill command reads partition ranges as the CLI does and names a bad one."""

import pytest

from synground_assets.ops.scale.backfill import BackfillError, backfill_variables, partition_keys


def test_a_range_expands_to_its_keys_and_becomes_the_mutations_variables():
    keys = partition_keys("shapes|00002...shapes|00004")
    assert keys == ["shapes|00002", "shapes|00003", "shapes|00004"]
    params = backfill_variables(keys, tags={"dagster/max_retries": "3"})["backfillParams"]
    assert params["partitionNames"] == keys and params["title"] == "shapes|00002...shapes|00004"
    assert [key["path"] for key in params["assetSelection"]] == [
        ["concepts"],
        ["descriptions"],
        ["images"],
        ["phrases"],
        ["boxes"],
    ]
    assert params["tags"] == [{"key": "dagster/max_retries", "value": "3"}]


@pytest.mark.parametrize(("text", "message"), [
    ("shapes|00003...shapes|00001", "'shapes|00003' comes after 'shapes|00001'"),
    ("shapes|00001", "expected <first>...<last>"),
    ("shape|00001...shape|00002", "no partition 'shape|00001'"),
])
def test_a_bad_range_is_refused_with_the_reason(text, message):
    with pytest.raises(BackfillError, match="partition range") as error:
        partition_keys(text)
    assert message in str(error.value)



def test_the_ends_of_a_range_are_ordered_as_dagster_lists_the_keys():
    from synground_assets.partitions import shard_partitions

    every_key = shard_partitions.get_partition_keys()
    for first, last in [(0, 1), (62, 66), (5, len(every_key) - 1)]:  # same recipe, next recipe, last recipe
        partition_keys(f"{every_key[first]}...{every_key[last]}")
        with pytest.raises(BackfillError, match="comes after"):
            partition_keys(f"{every_key[last]}...{every_key[first]}")
