"""Prompts as deployable artifacts: versioned templates in MLflow's prompt registry, aliases as the
deployable pointers, A/B tests of versions, and metric-driven prompt optimization.

Explained in: book/chapters/prompts/version_control.
"""
