"""Performance models: they choose how much work each task carries."""
