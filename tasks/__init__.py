"""The pipeline's steps: spec, cleaning, ingest, collection, quality, validation, datasets and publishing."""
