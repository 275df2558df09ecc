"""Designing networks: the DeepReShape solver (`solver`), the vectorized design space
(`space`) and cost-aware design over it (`costs`)."""
