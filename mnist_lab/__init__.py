__version__ = "0.1.0"

from . import data, model, train, eval  # noqa: E402  `import mnist_lab` gives every module
