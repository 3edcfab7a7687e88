"""Prompts that ship with the library, so every measurement runs on the same text offline.

The default model is a base model: these are completions and few-shot prompts, not chat.
"""

COMPLETION_PROMPTS: tuple[str, ...] = (
    "The three most common causes of latency in a web service are",
    "Q: What is the capital of France?\nA: Paris\nQ: What is the capital of Japan?\nA: Tokyo\n"
    "Q: What is the capital of Italy?\nA:",
    'def fibonacci(n):\n    """Return the n-th Fibonacci number."""\n',
    "English: Good morning.\nFrench: Bonjour.\nEnglish: Thank you very much.\nFrench:",
    "A checklist for deploying a new version of a service:\n1.",
    "The weather report for tomorrow says",
    "Review: The battery lasts all day and the screen is sharp.\nSentiment: positive\n"
    "Review: It broke after two days.\nSentiment:",
    "In operations, a runbook is",
)
