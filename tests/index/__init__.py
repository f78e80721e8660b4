"""A package so that its test modules get unique names (tests/ops/test_codec.py has the same basename)."""
