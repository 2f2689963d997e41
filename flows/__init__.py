"""Prefect flows, the only Prefect-aware layer: ingest, collect (judge, validate, register), the pipeline of both,
the smoke check, and `steps`: how a flow runs the plain steps of tasks/ under the one retry policy."""
