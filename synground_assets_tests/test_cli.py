"""`python -m synground_assets.cli index` and `summary` on the default data root and lineage path."""

import os

import pandas as pd

from synground_assets import cli
from synground_assets.resources.lineage import Lineage, default_lineage_path, write_shard_lineage
from synground_assets.resources.store import ShardStore, default_data_root, write_table


def publish_yield(store: ShardStore, shard: str) -> None:
    counts = pd.DataFrame({"phrases": [10], "phrases_with_box": [9], "boxes": [9], "recipe": "shapes", "shard": shard,
                           "model_id": "shapes-v1"})
    with store.writing("shapes", "boxes", shard) as folder:
        write_table(folder, pd.DataFrame({"box_id": [f"b{i}" for i in range(9)]}))
        write_shard_lineage(folder, {"shard_yields": counts})


def test_index_cleans_crashed_writes_and_indexes_new_shards(project_home, capsys):
    store = ShardStore(default_data_root())
    publish_yield(store, "00000")
    crashed = store.root / "shapes" / "boxes" / ".tmp-00001-elsewhere-1-run-0123"  # another host's, long ago
    crashed.mkdir()
    os.utime(crashed, (0, 0))
    assert cli.main(["index"]) == 0
    assert "1 shard(s) indexed" in capsys.readouterr().out and not crashed.exists()
    assert cli.main(["index"]) == 0
    assert "0 shard(s) indexed" in capsys.readouterr().out
    assert Lineage(default_lineage_path()).query("SELECT sum(boxes) AS n FROM shard_yields").n[0] == 9


def test_summary_refreshes_the_index_before_it_reports_the_yield(project_home, capsys):
    store = ShardStore(default_data_root())
    publish_yield(store, "00000")
    publish_yield(store, "00001")
    assert cli.main(["summary"]) == 0
    out = capsys.readouterr().out
    assert "recipe shapes: shards published: concepts 0, descriptions 0, images 0, phrases 0, boxes 2" in out
    [yield_row] = [line.split() for line in out.splitlines() if line.startswith("shapes ")]
    assert yield_row == ["shapes", "shapes-v1", "2", "20", "18", "18", "0.9"]
