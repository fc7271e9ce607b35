"""The generation stages as plain functions, one module per stage: what a shard is made of.

Each stage takes the recipe, the shard, what its upstream stages published (tables read by the
caller), the model suite (`adapters/suite.py`: the stage asks it for its role) and, for the dedup
stages, what earlier shards hold; it returns a `StageResult` (result.py) held in memory: the
shard's tables and image files, its lineage rows, removals, skipped items and a preview. It writes
nothing and knows nothing of Dagster: the assets (`assets/`) read the inputs, call the stage and
publish what it returns.

- `batching.py`: `run_batched` (a failing batch retried item by item) and `Progress`;
- `concepts.py`, `descriptions.py`, `images.py`, `phrases.py`, `boxes.py`: the generation stages;
- `training.py`, `scoring.py`: the learning assets' decisions (fine-tuning data, held-out split, scores).
"""
