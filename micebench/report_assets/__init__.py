"""Static assets of the HTML report (a page template with its CSS and JS inline: no network, no libraries)."""

from __future__ import annotations

from importlib import resources
from string import Template


def page_template() -> Template:
    """The report page; placeholders ``$title`` and ``$body`` (``$$`` is a literal dollar)."""
    return Template(resources.files(__name__).joinpath("page.html").read_text(encoding="utf-8"))
