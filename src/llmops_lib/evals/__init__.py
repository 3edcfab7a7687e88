"""Evaluation: task sets with expectations, deterministic and log-probability scoring, cached runs of a
prompt over a set, and the statistics that say whether two runs differ.

Explained in: book/chapters/prompts/version_control.
"""
