"""What may come out of a jailed cell: data, never code.

JupyterLab trusts every output made during the session: it runs ``application/javascript``,
the ``<script>`` tags and event handlers of ``text/html``, and the raw HTML that markdown may
carry. A ``%%isolate --jail`` cell is code the user does not trust, so what it shows is cut
down here, in the kernel, before it is published:

* ``text/plain``, ``image/png``, ``image/jpeg`` and ``image/gif`` pass: browsers only draw
  them. Pictures must be base64 (bytes are encoded); metadata keeps a picture's numeric width
  and height and nothing else (``isolated``, ``unconfined``, ... change how a page treats it).
* ``text/html`` goes through nh3 (the Ammonia sanitizer): no script, no event handler, no
  style, no form or frame, links to ``http``, ``https``, ``mailto`` or relative places only,
  pictures from ``data:image/...`` only, so that showing an output never fetches anything
  (a jail has no network; its output must not borrow the browser's). The result is wrapped
  so that MathJax leaves it alone: JupyterLab 4's MathJax drops ``\\href{javascript:...}``
  itself (checked), frontends with an older MathJax would make it a link.
* ``image/svg+xml`` becomes an ``<img>`` whose source is the SVG as a ``data:`` URL: a
  picture loaded as an image runs no script and loads nothing, in every browser and every
  frontend, while an SVG put into the page as markup (as some frontends do) is live code.
  A PNG would need a rasteriser; the image is as safe and keeps the vectors.
* ``text/markdown`` and ``text/latex`` are shown as their source text (their renderers make
  HTML nobody sanitises); every other type (widgets, JSON, PDF, ...) is dropped. What is
  left always has a ``text/plain``, saying what was withheld when the cell gave none.

The bytes themselves come back over a pipe as pickles, and unpickling runs code: everything a
jailed cell sends is decoded by :func:`loads`, which builds plain data only.
"""

from __future__ import annotations

import base64
import binascii
import io
import pickle
import re
from typing import Any

TEXT, HTML, SVG = "text/plain", "text/html", "image/svg+xml"
PICTURES = ("image/png", "image/jpeg", "image/gif")
AS_SOURCE = ("text/markdown", "text/latex")
#: Most bytes a jailed cell may send back in all (displays, value, exports, error): the
#: kernel holds them until the cell ends, and a jail's memory limit does not bound the kernel.
OUTPUT_LIMIT = 64 << 20

_LINK_SCHEMES = ("http:", "https:", "mailto:")
_PICTURE_URL = re.compile(r"data:image/(png|jpeg|gif|webp|svg\+xml);base64,[A-Za-z0-9+/=\s]*\Z")
_SCHEME = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*:")
#: What a browser's URL parser drops before it reads a scheme ("java\tscript:" is javascript:).
_URL_NOISE = {ord(c): None for c in "\t\n\r"}
_URL_EDGES = "".join(chr(i) for i in range(0x21))
#: MathJax in JupyterLab skips elements of this class (its default ignoreHtmlClass).
_NO_MATH = "mathjax_ignore tex2jax_ignore"


class NotPlainData(ValueError):
    """What a jailed cell sent is not plain data."""


# ---------------------------------------------------------------------------- decoding
#: The only classes a jailed cell's pickles may name: builtins that take no iterable (so a
#: pickle cannot make the kernel build something huge), and Exception's builtin subclasses,
#: which a cell's error comes back as. Containers and scalars need no class at all.
_PLAIN_BUILTINS = frozenset({"complex", "range", "slice"})


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module == "builtins":
            import builtins

            found = getattr(builtins, name, None)
            if name in _PLAIN_BUILTINS or (isinstance(found, type)
                                           and issubclass(found, Exception)):
                return found
        if (module, name) == ("nskernel.cell.errors", "IsolatedRunError"):
            from nskernel.cell.errors import IsolatedRunError

            return IsolatedRunError
        raise NotPlainData(f"{module}.{name} is not plain data")

    def persistent_load(self, pid: Any) -> Any:
        raise NotPlainData("persistent ids are not plain data")


def loads(payload: bytes) -> Any:
    """Unpickle plain data only: None, bools, numbers, str, bytes, tuples, lists, dicts,
    sets, and builtin exceptions. Anything else (any other class, any callable) raises
    NotPlainData, before it is made."""
    try:
        return _PlainUnpickler(io.BytesIO(payload)).load()
    except NotPlainData:
        raise
    except Exception as exc:  # noqa: BLE001 - a hostile pickle may fail in any way
        raise NotPlainData(f"not a plain pickle: {type(exc).__name__}: {exc}") from None


def check_plain(value: Any, what: str) -> None:
    """In the child, before sending: NotPlainData with a one-line reason unless ``value``
    survives :func:`loads` (the kernel would refuse it; the cell hears why)."""
    try:
        loads(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))
    except (NotPlainData, pickle.PicklingError, TypeError, AttributeError) as exc:
        raise NotPlainData(f"{what}: a jailed cell sends back plain data only (str, numbers, "
                           f"bytes, lists, tuples, dicts, sets): {exc}") from None


# ---------------------------------------------------------------------------- output
def inert(data: Any, metadata: Any = None) -> tuple[dict[str, str], dict[str, dict]]:
    """The inert part of a display's mimebundle and metadata (see the module's docstring)."""
    data = data if isinstance(data, dict) else {}
    metadata = metadata if isinstance(metadata, dict) else {}
    shown: dict[str, str] = {}
    shown_metadata: dict[str, dict] = {}
    text = data.get(TEXT)
    if isinstance(text, str):
        shown[TEXT] = text
    for mime in AS_SOURCE:
        if isinstance(data.get(mime), str):
            shown[TEXT] = data[mime]
    for mime in PICTURES:
        picture = _base64(data.get(mime))
        if picture is not None:
            shown[mime] = picture
            size = _size(metadata.get(mime))
            if size:
                shown_metadata[mime] = size
    if isinstance(data.get(HTML), str):
        shown[HTML] = sanitized_html(data[HTML])
    elif isinstance(data.get(SVG), (str, bytes)):
        shown[HTML] = svg_as_image(data[SVG])
    if TEXT not in shown:
        withheld = sorted(str(mime) for mime in data if mime not in shown)
        shown[TEXT] = (f"[a jailed cell's output: {', '.join(withheld) or 'nothing'}, "
                       "not shown (only text, pictures and sanitised HTML are)]")
    return shown, shown_metadata


def sanitized_html(html: str) -> str:
    """``html`` with nothing that runs, fetches or styles; MathJax leaves it alone."""
    clean = _cleaner().clean(html)
    return f'<div class="{_NO_MATH}">{clean}</div>'


def svg_as_image(svg: str | bytes) -> str:
    """An ``<img>`` showing ``svg`` from a ``data:`` URL: drawn, never run."""
    raw = svg.encode("utf-8", "replace") if isinstance(svg, str) else svg
    return (f'<img alt="SVG picture" '
            f'src="data:image/svg+xml;base64,{base64.b64encode(raw).decode("ascii")}">')


_made: list[Any] = []


def _cleaner() -> Any:
    """nh3's Cleaner, made once (imported on first use: the magics load light)."""
    if not _made:
        import nh3

        _made.append(nh3.Cleaner(
            url_schemes={"http", "https", "mailto", "data"}, attribute_filter=_attribute,
            link_rel="noopener noreferrer nofollow"))
    return _made[0]


def _attribute(tag: str, attribute: str, value: str) -> str | None:
    """Pictures only from data: URLs (nothing is fetched); links only to http(s), mailto or
    a relative place, which the user follows by clicking."""
    url = value.translate(_URL_NOISE).strip(_URL_EDGES)
    if attribute == "src":
        return value if tag == "img" and _PICTURE_URL.match(url) else None
    if attribute == "href":
        scheme = _SCHEME.match(url)
        if scheme is None or scheme.group(0).lower() in _LINK_SCHEMES:
            return value
        return None
    return value


def _base64(picture: Any) -> str | None:
    """A picture as base64 text (bytes are encoded; text must already be base64)."""
    if isinstance(picture, bytes):
        return base64.b64encode(picture).decode("ascii")
    if isinstance(picture, str):
        try:
            base64.b64decode("".join(picture.split()), validate=True)
        except (binascii.Error, ValueError):
            return None
        return picture
    return None


def _size(metadata: Any) -> dict[str, int | float]:
    if not isinstance(metadata, dict):
        return {}
    return {key: metadata[key] for key in ("width", "height")
            if isinstance(metadata.get(key), (int, float))
            and not isinstance(metadata.get(key), bool)}


# ---------------------------------------------------------------------------- results
class Output:
    """A jailed cell's value as the notebook sees it: the inert form of its display."""

    def __init__(self, data: dict[str, str], metadata: dict[str, dict]) -> None:
        self.data, self.metadata = data, metadata

    def __repr__(self) -> str:
        return self.data[TEXT]

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> tuple[dict, dict]:
        return dict(self.data), dict(self.metadata)


def formatted(shell: Any, value: Any) -> tuple[dict, dict] | None:
    """In the jailed child: ``value`` as the mimebundle IPython would show (None for None),
    only the parts :func:`inert` may keep, so that it always goes back as plain data."""
    if value is None:
        return None
    data, metadata = shell.display_formatter.format(value)
    return ({mime: part for mime, part in data.items() if isinstance(part, (str, bytes))},
            {mime: _size(part) for mime, part in metadata.items() if _size(part)})


def received(outcome: Any, exports: list[str]) -> tuple[Output | None, dict[str, Any]]:
    """What a jailed cell's run_cell sent back, checked: its value's inert display and the
    values of the names asked for with --export (and of no other name)."""
    if not (isinstance(outcome, tuple) and len(outcome) == 2
            and isinstance(outcome[1], dict)):
        raise NotPlainData("a jailed cell sent back something that is not its result")
    shown, exported = outcome
    value = None
    if shown is not None:
        if not (isinstance(shown, tuple) and len(shown) == 2):
            raise NotPlainData("a jailed cell sent back a value that is not a display")
        value = Output(*inert(*shown))
    return value, {name: exported[name] for name in exports if name in exported}
