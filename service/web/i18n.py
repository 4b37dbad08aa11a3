"""Language of the pages: Norwegian bokmål by default, English on request."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final

from starlette.requests import Request

from service.web.messages import MESSAGES

__all__ = [
    "DEFAULT_LANGUAGE",
    "LANGUAGES",
    "LANG_COOKIE",
    "Translate",
    "choose_language",
    "translator",
]

_log = logging.getLogger("stafett.web")

LANGUAGES: Final = ("nb", "en")
DEFAULT_LANGUAGE: Final = "nb"
LANG_COOKIE: Final = "stafett_sprak"
# Norwegian in any written form (nb, no, nn) gets bokmål; the pages have no nynorsk yet.
_ALIASES: Final = {"nb": "nb", "no": "nb", "nn": "nb", "en": "en"}

Translate = Callable[..., str]


def _from_accept_language(header: str) -> str | None:
    weighted: list[tuple[float, int, str]] = []
    for position, part in enumerate(header.split(",")):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        language = _ALIASES.get(tag.strip().lower().split("-")[0])
        if language is not None and quality > 0:
            weighted.append((-quality, position, language))
    return min(weighted)[2] if weighted else None


def choose_language(request: Request) -> tuple[str, bool]:
    """Return the page language and whether it was chosen now (?lang=) and should be kept."""
    asked = _ALIASES.get(request.query_params.get("lang", "").lower())
    if asked is not None:
        return asked, True
    kept = _ALIASES.get(request.cookies.get(LANG_COOKIE, "").lower())
    if kept is not None:
        return kept, False
    header = request.headers.get("accept-language", "")
    return (_from_accept_language(header) if header else None) or DEFAULT_LANGUAGE, False


def translator(language: str) -> Translate:
    """Return t(key, **values) for a language, falling back to bokmål, then the key."""
    table = MESSAGES.get(language, MESSAGES[DEFAULT_LANGUAGE])
    fallback = MESSAGES[DEFAULT_LANGUAGE]

    def translate(key: str, /, **values: object) -> str:
        text = table.get(key) or fallback.get(key)
        if text is None:
            _log.warning("no text for %r", key)
            return key
        return text.format(**values) if values else text

    return translate
