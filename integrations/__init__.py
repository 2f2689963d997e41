"""One adapter per external system: object store, Label Studio, MLflow, Great Expectations, and the settings."""
