"""Throughput: stages on CPU and GPU, training, dedup, exports, lineage, the asset layer's overhead."""
