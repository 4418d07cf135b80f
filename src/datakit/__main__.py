"""`python -m datakit` runs the command line."""

from datakit.cli import app

app()
