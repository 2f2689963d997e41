"""Prefect flows: ingest, collect (judge, validate, register), the pipeline of both, and the smoke check."""
