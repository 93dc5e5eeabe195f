"""Test helpers: tiny datasets in the real on-disk formats, CLI argument lists, the network blocker."""
