"""Emitters: a plan -> the configuration of a build system (Cloud Build today)."""
