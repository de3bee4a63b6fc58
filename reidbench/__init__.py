"""reidbench: reproduce and benchmark person and vehicle re-identification papers."""

__version__ = "0.1.0"
