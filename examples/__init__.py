"""Example apps for demos and tests."""
