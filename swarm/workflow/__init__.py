"""Workflows: DAG definitions in seed 004's shapes, their contract check, analysis and schedules.

Pure code, like `swarm.core`: no I/O, no clock, no randomness of its own. A DAG run is a job of the task
engine (`swarm.workflow.compile`), so retries, exactly-once commits and failover carry over.
"""
