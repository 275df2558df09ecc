"""Private inference: export networks to JAX and run them under SPU."""
