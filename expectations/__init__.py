"""Great Expectations suites for labelflow's tables (JSON, one per table and task type) and custom expectations."""
