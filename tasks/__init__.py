"""The pipeline's steps: spec, cleaning, ingest, collection, quality, validation, datasets and publishing.

Plain typed functions over the ports of `ports.py`: no Prefect here (the flows run them and retry them).
"""
