"""Stages A-D and the runner."""
