"""Suites: where sessions come from (synthetic scenes, YAML files, MICE/EdiVal JSONL)."""
