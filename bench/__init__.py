"""The benchmarks, run by hand as modules from the checkout's root (`python -m bench.<group>.<script>`),
grouped by the question each answers: `learning` (does training learn, what are the filters worth),
`throughput` (how fast is each stage and what does the asset layer add), `orchestration` (does
Dagster hold up at the paper's scale). Every timed script goes through `bench.harness`; results are
written under bench/results/."""
