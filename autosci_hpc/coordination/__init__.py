"""Coordination: the coordinator loop, discussion and teams, seed replication and promotion."""
