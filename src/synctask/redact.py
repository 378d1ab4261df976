r"""Secrets out of every text synctask shows or keeps, whatever a vendor echoes back.

A vendor may quote the request in its error answer (Tushare repeats the JSON body with the token,
a REST gateway the ``Authorization`` header, an exception the URL with ``?token=``). Every secret
value a plan loads is registered here, and every message, event, stored text and log line passes
through ``Redactor.__call__`` on its way out, which replaces each value with ``***``.

A vendor may escape the value on the way back, and not all of it the same way: a URL keeps
``/`` and encodes ``=``, a JSON writer turns ``/`` into ``\/``, an HTML page writes ``&#61;``.
So each character of a secret is matched in any of its forms, independently of its neighbours:
itself, percent-encoded (either case, its UTF-8 bytes, once or twice encoded), ``+`` for a space,
a JSON or Python escape (``\/``, ``\u003d``, ``\x3d``), or an HTML character reference
(``&#61;``, ``&#x3D;``, ``&equals;``). Values shorter than eight characters are replaced only
where they stand alone, so a short test token does not garble ordinary words.
"""

from __future__ import annotations

import functools
import html.entities
import logging
import re

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
        parts = []
        for value in sorted(self._values, key=len, reverse=True):  # longest first: a value inside another
            form = "".join(_char_forms(c) for c in value)
            parts.append(form if len(value) >= _SHORT else rf"(?<![A-Za-z0-9]){form}(?![A-Za-z0-9])")
        return re.compile("|".join(parts))


# Escapes that write a character as a backslash and one letter (JSON, Python, JavaScript).
_SHORT_ESCAPES = {'"': '\\"', "\\": "\\\\", "/": "\\/", "'": "\\'", "\b": "\\b", "\f": "\\f", "\n": "\\n",
                  "\r": "\\r", "\t": "\\t"}


def _hex(number: int, digits: int = 1) -> str:
    """``number`` in hexadecimal with at least ``digits`` digits, either case, as a pattern."""
    return f"(?i:{number:0{digits}x})"


@functools.lru_cache(maxsize=4096)
def _char_forms(c: str) -> str:
    """A pattern that matches character ``c`` written in any of the ways text escapes it."""
    point = ord(c)
    utf8 = c.encode("utf-8")
    # Longer forms first: at a secret's last character the first form that fits is taken, and
    # the raw character is a prefix of several escapes ('%' of '%25').
    forms = ["".join("%25" + _hex(b, 2) for b in utf8),  # percent-encoded twice
             "".join("%" + _hex(b, 2) for b in utf8),  # percent-encoded, either case
             rf"&\#0*{point};?", rf"&\#[xX]0*{_hex(point)};?"]  # HTML character references
    if c == " ":
        forms.append(r"\+")  # a form's space
    if point < 0x10000:
        forms.append(r"\\u" + _hex(point, 4))
    else:  # a JSON writer's surrogate pair, or Python's long escape
        high, low = 0xD800 + ((point - 0x10000) >> 10), 0xDC00 + ((point - 0x10000) & 0x3FF)
        forms += [r"\\u" + _hex(high, 4) + r"\\u" + _hex(low, 4), r"\\U" + _hex(point, 8)]
    if point < 0x100:
        forms.append(r"\\x" + _hex(point, 2))
    if c in _SHORT_ESCAPES:
        forms.append(re.escape(_SHORT_ESCAPES[c]))
    forms += [re.escape(f"&{name}") for name in _ENTITIES.get(c, ())]
    forms.append(re.escape(c))
    return "(?:" + "|".join(forms) + ")"


def _entities() -> dict[str, list[str]]:
    """Each character's HTML named references (``equals;``, ``amp;``, ``amp``)."""
    found: dict[str, list[str]] = {}
    for name, text in html.entities.html5.items():
        if len(text) == 1:
            found.setdefault(text, []).append(name)
    return {c: sorted(names, key=len, reverse=True) for c, names in found.items()}


_ENTITIES = _entities()


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
