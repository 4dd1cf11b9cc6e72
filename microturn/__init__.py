"""microturn: interaction models that listen, watch and speak in time-aligned micro-turns."""

__version__ = "0.1.0"
