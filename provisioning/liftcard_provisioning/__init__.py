"""Technician tools: find, flash, deploy, configure and rescue liftcard readers."""
