"""The facade on top: ``personalize()``, the agent, bulk evaluation and benchmark runs, and the CLI.

Import the public names from :mod:`vptt` itself (``from vptt import personalize, Personalizer``).
"""
