"""Observability: the request log, cost, engine metrics under common names, dashboards, quality monitors.

Explained in: book/chapters/03_observability/monitoring.ipynb
"""
