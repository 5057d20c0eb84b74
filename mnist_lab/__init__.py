__version__ = "0.1.0"

# Submodules load on first use (`mnist_lab.train`, `from mnist_lab import eval`), so `import mnist_lab` and the
# `mnist-lab` commands that need no model (`--help`, `new`) start without torch (1.2 s); runs and sweep import pandas.
SUBMODULES = ("data", "model", "config", "record", "train", "eval", "runs", "sweep", "launch", "cli")


def __getattr__(name):
    if name in SUBMODULES:
        import importlib
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__(): return [*globals(), *SUBMODULES]
