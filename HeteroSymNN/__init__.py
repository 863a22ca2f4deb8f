"""Compatibility alias: the original HeteroSymNN import paths, served by heterosymnn."""
from heterosymnn import *  # noqa: F401,F403
from heterosymnn import __all__, __version__  # noqa: F401
