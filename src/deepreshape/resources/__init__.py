"""Data files shipped with the package (peers' published points), read with importlib.resources."""
