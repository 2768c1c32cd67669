"""ANIRA: a reproducible study of per-token dynamic compute allocation in recurrent Transformers."""

__version__ = "0.1.0"
