"""School system stand-in: REST/JSON behind OAuth2 client credentials, and a nightly CSV."""

from simulators.school.app import SchoolConfig, create_app

__all__ = ["SchoolConfig", "create_app"]
