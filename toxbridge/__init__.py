"""toxbridge: e-mail between households over the Tox peer-to-peer network."""

__version__ = "0.1.0"
