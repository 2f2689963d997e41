"""`python -m labelflow.cli`: the same command line as `labelflow`."""

from labelflow.cli import app

if __name__ == "__main__":
    app()
