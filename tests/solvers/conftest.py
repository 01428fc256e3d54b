"""Fixtures for the solver tests (problems are built in ``_problems``)."""

from ._problems import problem  # noqa: F401
