"""Development tooling shared by the tests and the benchmarks in `bench/`: a throwaway scale-out
deployment (`sandbox`) and a headless Chromium (`browser`). Nothing in the pipeline imports it."""
