"""What a jailed cell's output becomes: data, never code (nskernel.cell.jailed_output), and the
plain decoding of everything a jailed child sends back (the runner's channel)."""

from __future__ import annotations

import base64
import datetime
import os
import pickle
import struct

import pytest

from nskernel.cell import jailed_output, wire
from nskernel.cell.jailed_output import HTML, TEXT, NotPlainData, inert, loads

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\nfake").decode()


class Boom:
    """Unpickling it would run a command (in the kernel, as the kernel)."""

    def __reduce__(self):
        return (os.system, ("touch /nonexistent/should-never-run",))


# ---------------------------------------------------------------------------- mimebundles
def test_script_types_are_dropped_and_text_stays():
    shown, metadata = inert({TEXT: "<Javascript>", "application/javascript": "alert(1)",
                             "application/vnd.jupyter.widget-view+json": {"model_id": "x"},
                             "application/json": {"a": "<script>x</script>"},
                             "application/pdf": "JVBER"})
    assert shown == {TEXT: "<Javascript>"}
    assert metadata == {}


def test_nothing_left_to_show_says_what_was_withheld():
    shown, _ = inert({"application/javascript": "alert(1)"})
    assert shown == {TEXT: "[a jailed cell's output: application/javascript, not shown (only "
                           "text, pictures and sanitised HTML are)]"}


@pytest.mark.parametrize("html, gone", [
    ("<script>window.x=1</script>", "script"),
    ('<img src=x onerror="window.x=1">', "onerror"),
    ('<svg onload="window.x=1"><script>window.x=1</script></svg>', "onload"),
    ('<a href="javascript:window.x=1">go</a>', "javascript"),
    ('<a href="java\tscript:window.x=1">go</a>', "script:"),
    ('<a href=" JaVaScRiPt:window.x=1">go</a>', "script:"),
    ('<a href="data:text/html,<script>x</script>">go</a>', "data:"),
    ('<iframe srcdoc="<script>parent.x=1</script>"></iframe>', "iframe"),
    ("<style>body{display:none}</style>", "display"),
    ('<p style="background:url(https://example.invalid/leak)">x</p>', "url("),
    ('<img src="https://example.invalid/leak.png">', "example"),
    ('<img src="relative.png">', "relative"),
    ('<form action="/api/contents"><button>b</button></form>', "form"),
    ('<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>', "onerror"),
    ('<object data="x.swf"></object><embed src="x">', "embed"),
    ('<base href="https://example.invalid/">', "base"),
    ('<meta http-equiv="refresh" content="0;url=javascript:1">', "refresh"),
])
def test_html_loses_whatever_runs_or_fetches(html, gone):
    shown, _ = inert({HTML: html, TEXT: "t"})
    assert gone not in shown[HTML].lower()
    assert shown[HTML].startswith('<div class="mathjax_ignore tex2jax_ignore">')


def test_html_keeps_tables_links_and_data_pictures():
    html = ('<table><tr><th>a</th><td><b>1</b></td></tr></table>'
            '<a href="https://jupyter.org">site</a><a href="notes.ipynb">rel</a>'
            f'<img src="data:image/png;base64,{PNG}" width="10">')
    shown, _ = inert({HTML: html})
    for kept in ("<table>", "<b>1</b>", 'href="https://jupyter.org"', 'href="notes.ipynb"',
                 f'src="data:image/png;base64,{PNG}"', 'width="10"'):
        assert kept in shown[HTML]


def test_svg_becomes_a_picture_never_markup():
    svg = '<svg xmlns="http://www.w3.org/2000/svg"><script>window.x=1</script></svg>'
    shown, _ = inert({"image/svg+xml": svg, TEXT: "<SVG>"})
    assert "image/svg+xml" not in shown
    prefix = '<img alt="SVG picture" src="data:image/svg+xml;base64,'
    assert shown[HTML].startswith(prefix)
    assert base64.b64decode(shown[HTML][len(prefix):-2]).decode() == svg


def test_html_wins_over_svg_in_one_bundle():
    shown, _ = inert({HTML: "<b>b</b>", "image/svg+xml": "<svg/>"})
    assert "<b>b</b>" in shown[HTML] and "svg" not in shown[HTML]


def test_markdown_and_latex_show_their_source_as_text():
    shown, _ = inert({TEXT: "<Markdown>", "text/markdown": '<img src=x onerror="x()">'})
    assert shown == {TEXT: '<img src=x onerror="x()">'}
    shown, _ = inert({"text/latex": r"$\href{javascript:x()}{a}$"})
    assert shown == {TEXT: r"$\href{javascript:x()}{a}$"}


def test_pictures_must_be_base64_and_keep_only_their_size():
    shown, metadata = inert(
        {"image/png": PNG, "image/jpeg": b"\xff\xd8raw", "image/gif": "not base64 <script>"},
        {"image/png": {"width": 20, "height": 10.5, "unconfined": True},
         "image/jpeg": {"width": "100%", "height": True}, "isolated": True})
    assert shown["image/png"] == PNG
    assert shown["image/jpeg"] == base64.b64encode(b"\xff\xd8raw").decode()
    assert "image/gif" not in shown
    assert metadata == {"image/png": {"width": 20, "height": 10.5}}


@pytest.mark.parametrize("data, metadata", [
    (None, None), ("text", []), ({1: 2, TEXT: 5}, {"image/png": "x"}),
    ({HTML: b"<b>bytes</b>"}, {}), ({TEXT: ["a"], "image/svg+xml": 3}, {}),
])
def test_any_shape_gives_a_bundle_with_text(data, metadata):
    shown, shown_metadata = inert(data, metadata)
    assert isinstance(shown[TEXT], str)
    assert set(shown) <= {TEXT, HTML, "image/png", "image/jpeg", "image/gif"}
    assert isinstance(shown_metadata, dict)


# ---------------------------------------------------------------------------- values
def test_a_value_comes_back_as_its_inert_display_and_only_the_names_asked_for():
    value, exported = jailed_output.received(
        (({TEXT: "42", "application/javascript": "x()"}, {}),
         {"a": [1, {"b": b"c"}], "get_ipython": 0}), ["a", "missing"])
    assert repr(value) == "42"
    assert value._repr_mimebundle_() == ({TEXT: "42"}, {})
    assert exported == {"a": [1, {"b": b"c"}]}
    assert jailed_output.received((None, {}), []) == (None, {})


@pytest.mark.parametrize("outcome", [None, 5, (1, 2, 3), ((1,), {}), ("x", [])])
def test_a_result_of_another_shape_is_refused(outcome):
    with pytest.raises(NotPlainData):
        jailed_output.received(outcome, [])


# ---------------------------------------------------------------------------- decoding
@pytest.mark.parametrize("value", [
    None, True, 3, 2**200, 1.5, 1 + 2j, "s", b"b", bytearray(b"ba"), (1, "a"), [1, [2]],
    {"a": {1: None}}, {1, 2}, frozenset({3}), range(3), slice(1, 2),
    ValueError("bad", 1), OSError(2, "No such file", "/x"), KeyError("k"),
])
def test_plain_data_comes_back_as_it_was(value):
    back = loads(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))  # as sent
    if isinstance(value, BaseException):
        assert (type(back), back.args) == (type(value), value.args)
    else:
        assert back == value


@pytest.mark.parametrize("value", [
    Boom(), os.system, pickle.Pickler, SystemExit(1), KeyboardInterrupt(),
    datetime.date(2020, 1, 1), type, {"nested": [Boom()]},
])
def test_anything_else_is_refused_before_it_is_made(value):
    with pytest.raises(NotPlainData):
        loads(pickle.dumps(value))


def test_a_hand_made_pickle_cannot_call_anything():
    calls = [b"cos\nsystem\n(S'true'\ntR.",                      # protocol 0 GLOBAL + REDUCE
             b"\x80\x04\x95\x00\x00\x00\x00\x00\x00\x00\x00\x8c\x08builtins\x8c\x04eval"
             b"\x93\x8c\x011\x85R.",                              # STACK_GLOBAL eval('1')
             b"\x80\x02\x82\x01.",                                # EXT1: copyreg's registry
             b"\x80\x02X\x01\x00\x00\x00aQ.",                     # BINPERSID
             b"\x80\x04cbuiltins\nset\n\x8c\x01a\x85R."]           # set(iterable): not plain
    for payload in calls:
        with pytest.raises(NotPlainData):
            loads(payload)
    for garbage in (b"", b"\x80", b"\x80\x05\xff", b"junk" * 10):
        with pytest.raises(NotPlainData):
            loads(garbage)


def test_check_plain_names_what_cannot_come_back():
    jailed_output.check_plain({"a": [1]}, "--export a")
    with pytest.raises(NotPlainData, match=r"^--export df: a jailed cell sends back plain data "
                                        r"only .*: posix.system is not plain data$"):
        jailed_output.check_plain(Boom(), "--export df")
    with pytest.raises(NotPlainData, match="--export f"):
        jailed_output.check_plain(lambda: 1, "--export f")


# ---------------------------------------------------------------------------- the channel
def framed(message: object) -> bytes:
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return struct.pack("!I", len(payload)) + payload


def test_an_untrusted_channel_decodes_plain_messages_in_any_chunks():
    channel = wire.Channel(plain=True)
    value = (({TEXT: "1"}, {}), {"a": [1]})
    data = framed(("display", {TEXT: "x"}, {})) + framed(("value", value))
    for i in range(0, len(data), 7):
        channel.feed(data[i:i + 7])
    assert channel.messages == [("display", {TEXT: "x"}, {}), ("value", value)]


@pytest.mark.parametrize("message, said", [
    (("value", Boom()), "posix.system is not plain data"),
    (("display", "x", {}), "none of display, value or error"),
    (("error", "not an exception", ""), "none of display, value or error"),
    (["value", 1], "none of display, value or error"),
    (("exec", "x"), "none of display, value or error"),
])
def test_an_untrusted_channel_refuses_anything_else(message, said):
    with pytest.raises(wire.IsolatedRunError, match=said):
        wire.Channel(plain=True).feed(framed(message))


def test_an_untrusted_channel_takes_a_bounded_amount():
    channel = wire.Channel(plain=True)
    chunk = struct.pack("!I", 2**32 - 1) + b"x" * (1 << 20)
    with pytest.raises(wire.IsolatedRunError, match="more than 64 MiB of output"):
        for _ in range(80):
            channel.feed(chunk)
            chunk = b"x" * (1 << 20)


def test_a_trusted_channel_still_takes_any_pickle():
    channel = wire.Channel()
    channel.feed(framed(("value", datetime.date(2020, 1, 1))))
    assert channel.messages[0][1].year == 2020
