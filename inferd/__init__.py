"""inferd: a self-hostable inference cloud."""

__version__ = "0.1.0"
