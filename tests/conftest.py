"""Shared pytest setup: the tests/ folder is importable (tests import `rwkv_test_utils`)."""
