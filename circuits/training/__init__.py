"""Training: the loss (`loss`), the rules as pure functions (`schedule`), the loop (`loop.train`)."""

from circuits.training.loop import train

__all__ = ["train"]
