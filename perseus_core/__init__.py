"""Perseus core: make a service instance a self-reporting node in Redis.

This package never imports Textual: it is what an instance embeds, what the
agent runs and what the dashboard reads through.
"""

__version__ = "0.1.0"
