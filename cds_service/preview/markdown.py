"""Card text for the preview page: Markdown rendered to sanitised HTML, and links filtered to http(s).

Card ``detail`` is CommonMark (CDS Hooks 2.0.1) and card text may one day quote patient data or a
configurable template, so it is treated as hostile: markdown-it-py runs with raw HTML disabled (tags
come out as text), then nh3 keeps only a short list of formatting tags, drops every attribute except
``href`` on links, and keeps a link only when it is absolute http(s). The page's CSP is the second wall.
"""

from __future__ import annotations

import functools
from typing import Any
from urllib.parse import urlsplit

import nh3
from markdown_it import MarkdownIt

_TAGS = {
    "p", "br", "hr", "strong", "em", "b", "i", "code", "pre", "blockquote",
    "ul", "ol", "li", "a", "h1", "h2", "h3", "h4", "h5", "h6",
    "table", "thead", "tbody", "tr", "th", "td",
}


def is_web_url(value: Any) -> bool:
    """True for an absolute http:// or https:// URL with a host (no javascript:, data:, relative ...)."""
    if not isinstance(value, str) or not value.strip():
        return False
    try:
        parts = urlsplit(value.strip())
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.netloc)


def _attribute_filter(tag: str, attr: str, value: str) -> str | None:
    if tag == "a" and attr == "href":
        return value if is_web_url(value) else None
    return value


@functools.lru_cache(maxsize=1)
def _parser() -> MarkdownIt:
    # html=False: "<script>" in card text is shown as text, never parsed as a tag.
    return MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False}).enable("table")


def render_markdown(text: Any) -> str:
    """Safe HTML for a card's Markdown ``detail`` ("" for nothing)."""
    if not isinstance(text, str) or not text.strip():
        return ""
    html = _parser().render(text)
    return nh3.clean(
        html,
        tags=_TAGS,
        clean_content_tags={"script", "style"},
        attributes={"a": {"href"}},
        attribute_filter=_attribute_filter,
        url_schemes={"http", "https"},
        link_rel="noopener noreferrer",
        set_tag_attribute_values={"a": {"target": "_blank"}},
        strip_comments=True,
    ).strip()


def web_link(label: Any, url: Any) -> dict[str, str] | None:
    if not is_web_url(url):
        return None
    text = label if isinstance(label, str) and label.strip() else url
    return {"label": text, "url": url.strip()}


def smart_link(link: dict[str, Any], launcher: str | None, patient_id: str | None) -> dict[str, str] | None:
    """A card's ``smart`` link as the page shows it: through the development launcher (CDS_SMART_PREVIEW_LAUNCHER,
    e.g. the test EHR's), which adds ``iss`` and ``launch`` as an EHR would; else the bare launch URL, whose page
    says that an EHR must open it."""
    url = link.get("url")
    if not is_web_url(url):
        return None
    label = link.get("label") if isinstance(link.get("label"), str) else "SMART app"
    if launcher and is_web_url(launcher) and patient_id:
        from urllib.parse import urlencode

        query = urlencode({"app": url, "patient": patient_id, "appContext": link.get("appContext") or ""})
        return {"label": f"{label} (SMART app, via the launcher)", "url": f"{launcher}?{query}"}
    return {"label": f"{label} (SMART app: an EHR opens it)", "url": url.strip()}


def preview_card(card: dict[str, Any], launcher: str | None = None, patient_id: str | None = None) -> dict[str, Any]:
    """What the page needs beyond the CDS Hooks card: sanitised detail HTML and only http(s) links."""
    from cds_service.models import EVIDENCE_EXTENSION, RULE_ID_EXTENSION

    extension = card.get("extension") or {}
    out: dict[str, Any] = {"uuid": card.get("uuid"), "detail_html": render_markdown(card.get("detail"))}
    rule = extension.get(RULE_ID_EXTENSION)
    if isinstance(rule, str):
        out["rule_id"] = rule
    source = card.get("source") or {}
    source_link = web_link(source.get("label"), source.get("url"))
    if source_link:
        out["source_url"] = source_link["url"]
    links = [link for link in (web_link(x.get("label"), x.get("url")) for x in card.get("links") or []
                               if isinstance(x, dict) and x.get("type", "absolute") == "absolute") if link]
    links += [link for link in (smart_link(x, launcher, patient_id) for x in card.get("links") or []
                                if isinstance(x, dict) and x.get("type") == "smart") if link]
    if links:
        out["links"] = links
    evidence = extension.get(EVIDENCE_EXTENSION)
    items = evidence if isinstance(evidence, list) else [evidence] if isinstance(evidence, dict) else []
    shown = []
    for item in items:
        if not isinstance(item, dict):
            continue
        entry = {k: str(item[k]) for k in ("level", "citation") if item.get(k) not in (None, "")}
        if is_web_url(item.get("url")):
            entry["url"] = item["url"].strip()
        if entry:
            shown.append(entry)
    if shown:
        out["evidence"] = shown
    return out


def preview_cards(response: dict[str, Any], launcher: str | None = None,
                  patient_id: str | None = None) -> list[dict[str, Any]]:
    return [preview_card(c, launcher, patient_id) for c in response.get("cards") or [] if isinstance(c, dict)]
