"""Subcommands of ``netemu``: one module each, each with ``register(subparsers)``."""
