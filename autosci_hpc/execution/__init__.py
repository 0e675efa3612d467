"""Trials: node-side runner, atomic result files, executors (local | slurm) and the monitor."""
