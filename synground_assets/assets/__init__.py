"""One module per pipeline stage; each asset reads from the store, calls a role, writes, records lineage."""

import warnings

from dagster import BetaWarning, PreviewWarning

# Beta APIs this code location uses on purpose (single-run backfills load each model once; the
# recipe dimension maps to the per-recipe assets). Dagster warns on every import of the code
# location, in every process, a screenful before any useful line: silenced here, by name only, so a
# new beta or deprecated API still warns.
for _knowingly_used in (r"Parameter `backfill_policy` of function `asset`",
                        r"Class `MultiToSingleDimensionPartitionMapping`"):
    warnings.filterwarnings("ignore", message=_knowingly_used, category=BetaWarning)
# Dagster's own Pipes session reads a preview property of every message reader, so each Pipes run
# (the training job) warned about an API this code never calls (dagster/_core/pipes/context.py).
warnings.filterwarnings("ignore", message=r"Function `PipesMessageReader.expected_writer_count`",
                        category=PreviewWarning)
