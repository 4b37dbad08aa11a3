"""ASGI entry point for uvicorn workers: `service.api.asgi:app`, settings from the environment.

Each uvicorn worker is a fresh process that imports this module, so logging is configured
here too (the parent's configuration does not reach spawned workers).
"""

from service.api.app import create_app
from service.config import Settings
from service.logs import configure_logging

_settings = Settings()
configure_logging(level=_settings.log_level, json_lines=_settings.log_json)
app = create_app(_settings)
