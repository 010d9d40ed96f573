"""One place that reads the environment (django-environ); settings modules import from here."""

from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"

env = environ.Env()
# A developer's .env (never committed) is read if present; real environment variables win.
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)
