"""The lowest layer: errors, the persona model and its JSONL format, settings and provider clients.

Nothing here imports from ``vptt.stores``, ``vptt.evaluators``, ``vptt.agents`` or ``vptt.sdk``.
"""
