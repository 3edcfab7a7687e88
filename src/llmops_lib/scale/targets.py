"""The names of the Kubernetes render targets: one place, read by the renderer and by `llmops render --help`
(which must not import the renderer: it loads the engines, the gateway and the release specs).

Explained in: book/chapters/10_scale/beyond_one_machine.
"""

TARGETS = (
    "deployment",
    "rayservice",
    "kserve-isvc",
    "kserve-llmisvc",
    "argo-rollout",
    "httproute",
    "inferencepool",
    "production-stack",
)
