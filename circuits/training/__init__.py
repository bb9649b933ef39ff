"""Training: the loss (`loss`), the rules as pure functions (`schedule`), the loop (`loop.train`).

`train` is imported on first use, so `circuits.training.distributed` and `schedule` load without torch's model stack.
"""

__all__ = ["train"]


def __getattr__(name: str):
    if name == "train":
        from circuits.training.loop import train

        return train
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
