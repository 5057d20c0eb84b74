__version__ = "0.1.0"
from . import data, model, train, eval, runs, sweep
