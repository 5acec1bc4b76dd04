"""Subcommands of the ``qryptify`` CLI; each module has ``register(subparsers)``."""
