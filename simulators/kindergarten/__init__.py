"""Kindergarten system stand-in: REST/JSON with an API key and a paged change feed."""

from simulators.kindergarten.app import KindergartenConfig, create_app

__all__ = ["KindergartenConfig", "create_app"]
