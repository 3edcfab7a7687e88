"""llmops_lib: the library behind the LLMOps Handbook.

Chapters, labs and runbooks are stories told with these calls; nothing in a notebook
re-implements what lives here.
"""

from llmops_lib.about import versions

__all__ = ["versions"]
