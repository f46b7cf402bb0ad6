"""DTN routing algorithms and IP route computation, installed as ``netemu.routing``."""
