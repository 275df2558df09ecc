"""What people read: one run's report, Pareto plots across runs, and the readers and
figure helpers they share."""
