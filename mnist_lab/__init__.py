__version__ = "0.1.0"
from . import data, model, config, record, train, eval


def __getattr__(name):
    # runs and sweep import pandas (0.1 s): loaded on first use, so a training run does not pay for them
    if name in ("runs", "sweep", "cli"):
        import importlib
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__(): return [*globals(), "runs", "sweep", "cli"]
