"""Backup engines (restic, rustic): pure argv builders, output parsers, one executor."""
