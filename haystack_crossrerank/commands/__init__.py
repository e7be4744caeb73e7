"""The `crossrerank` command line and the servers: each module is one command (`cli.py` dispatches)."""

__all__: list[str] = []
