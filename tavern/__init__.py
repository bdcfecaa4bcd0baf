"""Tavern: a terminal roleplay chat frontend with its own llama.cpp engine.

Imports nothing heavy: `tavern --help` and the TUI's first frame must not pay for a model library.
"""

__version__ = "0.1.0"
