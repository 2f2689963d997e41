"""Custom expectations: every module here is imported before suites are loaded."""
