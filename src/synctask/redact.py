"""Secrets out of every text synctask shows or keeps, whatever a vendor echoes back.

A vendor may quote the request in its error answer (Tushare repeats the JSON body with the token,
a REST gateway the ``Authorization`` header, an exception the URL with ``?token=``). Every secret
value a plan loads is registered here, and every message, event, stored text and log line passes
through ``Redactor.__call__`` on its way out, which replaces each value (raw, URL-encoded or
JSON-escaped) with ``***``. Values shorter than eight characters are replaced only where they
stand alone, so a short test token does not garble ordinary words.
"""

from __future__ import annotations

import json
import logging
import re
from urllib.parse import quote, quote_plus

__all__ = ["Redactor", "RedactingFilter", "SECRETS", "MASK"]

MASK = "***"
_SHORT = 8


class Redactor:
    """The secrets to hide, and the function that hides them in a text."""

    def __init__(self) -> None:
        self._values: set[str] = set()
        self._pattern: re.Pattern[str] | None = None

    def add(self, value: str | None) -> None:
        if not value or value in self._values:
            return
        self._values.add(value)
        self._pattern = None

    def __bool__(self) -> bool:
        return bool(self._values)

    def __call__(self, text: str) -> str:
        if not self._values or not text:
            return text
        if self._pattern is None:
            self._pattern = self._compile()
        return self._pattern.sub(MASK, text)

    def _compile(self) -> re.Pattern[str]:
        forms: set[str] = set()
        for value in self._values:
            forms.update({value, quote(value, safe=""), quote_plus(value), json.dumps(value)[1:-1]})
        parts = []
        for form in sorted(forms, key=len, reverse=True):  # longest first: a form inside another
            escaped = re.escape(form)
            parts.append(escaped if len(form) >= _SHORT else rf"(?<![A-Za-z0-9]){escaped}(?![A-Za-z0-9])")
        return re.compile("|".join(parts))


class RedactingFilter(logging.Filter):
    """A logging filter that masks secrets in a record's message (and its exception text)."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        if self.redactor:
            record.msg = self.redactor(record.getMessage())
            record.args = None
            if record.exc_info:
                formatted = logging.Formatter().formatException(record.exc_info)
                record.exc_text = self.redactor(formatted)
        return True


SECRETS = Redactor()
"""Every secret this process has loaded (``model.Secret`` registers itself here)."""

logging.getLogger("synctask").addFilter(RedactingFilter(SECRETS))
