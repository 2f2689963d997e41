"""The local stack behind `labelflow up`, and the production files (compose, Dockerfiles) beside it."""
