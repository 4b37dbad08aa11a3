"""Bearer-token authentication: verify JWTs from trusted IdPs, map them to a Principal, check
SMART scopes; plus a local dev issuer for development and tests."""

from service.auth.dev_issuer import DEV_ISSUER, DevIssuer
from service.auth.errors import AccessError, AuthError, InsufficientScope
from service.auth.jwks import KeySource, RemoteJwks, StaticKeySource
from service.auth.principal import Principal, PrincipalKind
from service.auth.scopes import Interaction, ScopeContext, ScopeSet, SmartScope
from service.auth.verifier import ACCEPTED_ALGORITHMS, TokenVerifier

__all__ = [
    "ACCEPTED_ALGORITHMS",
    "DEV_ISSUER",
    "AccessError",
    "AuthError",
    "DevIssuer",
    "InsufficientScope",
    "Interaction",
    "KeySource",
    "Principal",
    "PrincipalKind",
    "RemoteJwks",
    "ScopeContext",
    "ScopeSet",
    "SmartScope",
    "StaticKeySource",
    "TokenVerifier",
]
