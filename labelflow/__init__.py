"""labelflow."""
