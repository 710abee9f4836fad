"""``python -m vptt``: the command line."""

from vptt.sdk.cli import app

app(prog_name="vptt")
