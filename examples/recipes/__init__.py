"""Recipes: wa-middleware in Django, Litestar and Falcon apps, each runnable and tested (docs/frameworks.md)."""
