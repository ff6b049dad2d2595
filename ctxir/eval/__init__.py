"""Evaluation: UDF surface extraction and the paper's reconstruction and semantic metrics."""
