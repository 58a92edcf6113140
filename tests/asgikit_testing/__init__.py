"""Helpers shared by the kit's test suites: real clients against the project's containers."""
