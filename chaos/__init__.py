"""The chaos tier: a seeded fault-injection run of the whole pipeline on its own stack, checked
against the simulator's truth (docs/chaos.md). Tooling: never imported by the product.

``python -m chaos [--quick] [--seed N]`` (``make chaos``).
"""
