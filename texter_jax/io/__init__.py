"""Disk I/O: Orbax checkpoints, atomic result files, images."""
