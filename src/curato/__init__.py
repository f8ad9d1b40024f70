"""curato: is your training data good enough? Diverse, clean, unbiased, big enough."""

__version__ = "0.1.0"
