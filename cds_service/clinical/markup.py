r"""Text from the EHR is data, never markup: the one escaping rule for every value put into a card.

Card ``detail`` is (GitHub-flavoured) Markdown and EHRs render it; some render summaries and labels as
Markdown too. Every value interpolated into a card template may quote the record (a product name, a
Condition's text, a unit), so it is made literal here first and can never become a link, an image,
emphasis, a heading, a list, a table or HTML. CommonMark (section 2.4): a backslash before ASCII
punctuation makes it literal and is not shown. Only what can start markup where the value lands (inside
a line of a template) is escaped, so the service's own wording ("2.82 g/kg > 2.2", "mL/min/{1.73_m2}")
reads the same in a renderer that shows text as it is:

* everywhere: ``\`` ````` ``*`` ``[`` ``]`` ``|`` ``~``; ``<`` before a letter, ``/``, ``!`` or ``?`` (a tag
  or an autolink); ``_`` unless inside a word (where it cannot emphasise); ``&`` when it would start an
  entity (``&lt;`` stays those four characters);
* at the start of the value: a heading, quote, list or thematic-break marker (``#``, ``>``, ``-``, ``+``,
  ``=``, ``1.``);
* line breaks become spaces, so a value never starts a block of its own;
* bare web and e-mail addresses, which GitHub-flavoured Markdown links without any punctuation, get a
  zero-width space between the slashes of ``://``, after ``www`` and before ``@``: shown the same, never a link.

:func:`code` is for a value shown as code (a FHIR reference): a code span whose fence is longer than any
run of backticks inside it.
"""

from __future__ import annotations

import re

from .memo import by_short_text

ZWSP = "\u200b"
_ALWAYS = r"[\\`*\[\]|~]|<(?=[A-Za-z/!?])"
_UNDERSCORE = r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])"
_ENTITY = r"&(?=#?[A-Za-z0-9]+;)"
_INLINE = re.compile(f"{_ALWAYS}|{_UNDERSCORE}|{_ENTITY}")
_AUTOLINK = re.compile(r"(:/(?=/)|(?<![\w.])www(?=\.)|(?=@))", re.IGNORECASE)
_LEADING = re.compile(r"^(\s*)(#|>|=|[-+](?=[\s\-+]|$)|\d{1,9}(?=[.)](?:\s|$)))")
_BREAKS = str.maketrans({"\n": " ", "\r": " "})
_TOUCHED = re.compile(r"[\\`*\[\]<|~_&@\n\r]|://|www\.|^\s*[#>=+\-\d]", re.IGNORECASE)


def text(value: object) -> str:
    """``value`` as literal Markdown text (see the module docstring)."""
    return _text(value if type(value) is str else str(value))


@by_short_text(256)
def _text(s: str) -> str:
    if _TOUCHED.search(s) is None:
        return s
    s = _INLINE.sub(lambda m: "\\" + m.group(0), s.translate(_BREAKS))
    s = _AUTOLINK.sub(lambda m: m.group(1) + ZWSP if m.group(1) else ZWSP, s)
    match = _LEADING.match(s)
    if match:
        marker = match.group(2)
        if marker[0].isdigit():  # "1." / "1)": escape the punctuation after the number
            s = s[:match.end()] + "\\" + s[match.end():]
        else:
            s = s[:match.start(2)] + "\\" + s[match.start(2):]
    return s



def code(value: object) -> str:
    """``value`` as a Markdown code span (shown literally; nothing inside is ever markup)."""
    s = value if type(value) is str else str(value)
    if "`" not in s and "\n" not in s and "\r" not in s and s.strip():  # a FHIR reference: one backtick each side
        return f"`{s}`"
    s = s.replace("\n", " ").replace("\r", " ")
    longest = max((len(run) for run in re.findall(r"`+", s)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if s.startswith("`") or s.endswith("`") or not s.strip() else ""
    return f"{fence}{pad}{s}{pad}{fence}"
