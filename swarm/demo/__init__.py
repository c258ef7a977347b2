"""Demonstrations that build a whole scenario from nothing on a running (or self-started) cluster."""
