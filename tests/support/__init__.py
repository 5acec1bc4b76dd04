"""Test kit shared by the test tiers (and the tooling): processes, fault points."""
