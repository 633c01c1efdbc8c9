"""cabench: reproduce every table of 'Coordinate Attention for Efficient Mobile Network Design'."""

__version__ = "0.1.0"
