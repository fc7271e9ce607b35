"""One module per pipeline stage; each asset reads from the store, calls a role, writes, records lineage."""
