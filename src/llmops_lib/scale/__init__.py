"""Beyond one machine: a local Ray cluster serving llama-server replicas behind the gateway, and the same
specs rendered for Kubernetes and validated offline.

Explained in: book/chapters/10_scale/beyond_one_machine.
"""
