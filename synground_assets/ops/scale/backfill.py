"""Launch a many-run backfill from a shell, through the Dagster instance's GraphQL API.

    python -m synground_assets.ops.scale.backfill --partition-range 'shapes|00000...shapes|00015' \
        [--url http://127.0.0.1:3000] [--assets concepts,descriptions,images,phrases,boxes] [--tag k=v]

`dagster asset materialize --partition-range` executes a range as one run in the calling shell and
refuses many-run assets (Dagster's CLI, `dagster/_cli/asset.py`). This command asks the webserver
for the same backfill the UI launches (`launchPartitionBackfill`): the daemon cuts it into runs of
at most `SYNGROUND_SHARDS_PER_RUN` shards (scale profile) that queue and go to workers, and it
appears under Overview > Backfills. It returns as soon as the backfill is recorded.
"""

from __future__ import annotations

import argparse
import json
import urllib.request
from collections.abc import Callable, Mapping, Sequence

import dagster as dg

from synground_assets.partitions import shard_partitions, split_shard_key

GENERATION_ASSETS = ("concepts", "descriptions", "images", "phrases", "boxes")

LAUNCH_BACKFILL = """
mutation LaunchBackfill($backfillParams: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $backfillParams) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on Error { message }
  }
}
"""

Post = Callable[[str, Mapping], Mapping]  # (query, variables) -> the response's "data"


class BackfillError(RuntimeError):
    """The webserver refused the backfill; the message is Dagster's."""


def partition_keys(partition_range: str) -> list[str]:
    """'shapes|00000...shapes|00003' -> the four keys, as the CLI reads a range."""
    start, sep, end = partition_range.partition("...")
    if not sep or not start or not end:
        raise BackfillError(
            f"partition range {partition_range!r}: expected <first>...<last>, e.g. 'shapes|00000...shapes|00015'"
        )
    # Each end is checked on its own, not looked up in the list of every key (192,000 keys at the
    # paper's 16,000 shards x 12 recipes take seconds to list). Keys are ordered recipe first
    # (recipes sorted by name), then shard.
    for key in (start, end):
        if not shard_partitions.has_partition_key(key):
            raise BackfillError(
                f"partition range {partition_range!r}: no partition {key!r}; keys look like 'shapes|00003'"
            )
    if split_shard_key(start) > split_shard_key(end):
        raise BackfillError(f"partition range {partition_range!r}: {start!r} comes after {end!r}")
    return shard_partitions.get_partition_keys_in_range(dg.PartitionKeyRange(start, end))


def backfill_variables(keys: Sequence[str], assets: Sequence[str] = GENERATION_ASSETS,
                       tags: Mapping[str, str] | None = None, title: str | None = None) -> dict:
    return {"backfillParams": {
        "assetSelection": [{"path": [asset]} for asset in assets],
        "partitionNames": list(keys),
        "tags": [{"key": key, "value": value} for key, value in (tags or {}).items()],
        "title": title or f"{keys[0]}...{keys[-1]}",
    }}


def launch_backfill(post: Post, variables: Mapping) -> str:
    """Send the mutation; return the backfill id or raise with Dagster's message."""
    result = post(LAUNCH_BACKFILL, variables)["launchPartitionBackfill"]
    if result["__typename"] != "LaunchBackfillSuccess":
        raise BackfillError(f"{result['__typename']}: {result.get('message', '')}")
    return result["backfillId"]


def http_post(url: str, timeout_s: float = 60) -> Post:
    def post(query: str, variables: Mapping) -> Mapping:
        body = json.dumps({"query": query, "variables": variables}).encode()
        request = urllib.request.Request(f"{url.rstrip('/')}/graphql", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            answer = json.load(response)
        if answer.get("errors"):
            raise BackfillError(f"GraphQL errors from {url}: {answer['errors']}")
        return answer["data"]
    return post


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m synground_assets.ops.scale.backfill", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--partition-range", required=True, help="<first>...<last>, e.g. 'shapes|00000...shapes|00015'")
    parser.add_argument("--url", default="http://127.0.0.1:3000", help="the Dagster webserver")
    parser.add_argument("--assets", default=",".join(GENERATION_ASSETS), help="comma-separated asset names")
    parser.add_argument(
        "--tag", action="append", default=[], metavar="KEY=VALUE", help="a tag on the backfill and its runs"
    )
    args = parser.parse_args(argv)
    if any("=" not in tag for tag in args.tag):
        parser.error(f"--tag expects KEY=VALUE, got {[tag for tag in args.tag if '=' not in tag]}")
    tags = dict(tag.split("=", 1) for tag in args.tag)
    try:
        keys = partition_keys(args.partition_range)
        backfill_id = launch_backfill(http_post(args.url), backfill_variables(keys, args.assets.split(","), tags))
    except BackfillError as exc:
        parser.exit(1, f"error: {exc}\n")
    except OSError as exc:  # connection refused, unknown host, timeout
        parser.exit(1, f"error: no Dagster webserver answered at {args.url} ({exc}); start one, or pass --url\n")
    print(f"backfill {backfill_id}: {len(keys)} partitions; follow it at {args.url.rstrip('/')}/runs/b/{backfill_id}")


if __name__ == "__main__":
    main()
