"""Health station stand-in: a FHIR R4 server with its own ids and its own coding."""

from simulators.health_station.app import HealthStationConfig, create_app

__all__ = ["HealthStationConfig", "create_app"]
