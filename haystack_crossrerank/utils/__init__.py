"""Small helpers that every layer may use: argument checks, paths, progress bars, optional extras."""

__all__: list[str] = []
