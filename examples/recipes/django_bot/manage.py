#!/usr/bin/env python
"""Django's command line for the recipe: ``python examples/recipes/django_bot/manage.py migrate``."""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the repository root


def main() -> None:
    from django.core.management import execute_from_command_line

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "examples.recipes.django_bot.settings")
    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
