"""Outbound delivery: the consent router that sends each change to the organisations the
family permitted, and tells those that lost the permission."""

from service.delivery.participants import log_organisations, stafettholder_organisation
from service.delivery.router import ConsentRouter, RouteResult

__all__ = ["ConsentRouter", "RouteResult", "log_organisations", "stafettholder_organisation"]
