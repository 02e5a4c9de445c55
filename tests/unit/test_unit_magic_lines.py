"""Magic lines: parsing, expansion, the shorthands' hand-off, and every bad-input message."""

from __future__ import annotations

import pytest
from IPython.core.error import UsageError
from IPython.core.magic import MAGIC_NO_VAR_EXPAND_ATTR

from nskernel.magics import lab as labmagics
from nskernel.magics import magicargs
from nskernel.magics import namespaces as magics


def one_line(parser, line: str) -> str:
    with pytest.raises(UsageError) as raised:
        magicargs.parse_line(parser, line)
    message = str(raised.value)
    assert "\n" not in message.strip()
    return message


@pytest.mark.parametrize(("parser", "line", "message"), [
    (magics.ISOLATE, "--pdi", "unrecognized arguments: --pdi"),
    (magics.ISOLATE, "--timeout soon", "argument --timeout: invalid float value: 'soon'"),
    (magics.ISOLATE, "--hostname 'unclosed", "%isolate: No closing quotation"),
    (magics.ISOLATE, "x" * 5000, "%isolate: the line is 5000 characters; at most 4096"),
    (magics.UTS, "", "the following arguments are required: hostname"),
    (labmagics.NETNS, "rename a", "argument action: invalid choice: 'rename'"),
    (labmagics.ROUTE, "a default through 10.0.0.1", "argument via: invalid choice"),
    (labmagics.FORWARD, "r maybe", "argument state: invalid choice: 'maybe'"),
])
def test_a_bad_line_is_one_usage_line(parser, line, message):
    assert message in one_line(parser, line)


def test_names_and_expressions_expand_from_the_notebook():
    namespace = {"box": "web", "n": 2}
    assert magicargs._expand(namespace, "--hostname $box-{n + 1}") == "--hostname web-3"
    assert magicargs._expand(namespace, "{undefined} stays") == "{undefined} stays"


def test_every_magic_takes_its_line_as_typed():
    for magic in (magics.NamespaceMagics.isolate, magics.NamespaceMagics.uts,
                  magics.NamespaceMagics.netns, labmagics.LabMagics.veth,
                  labmagics.LabMagics.netns):
        assert getattr(magic, MAGIC_NO_VAR_EXPAND_ATTR, False), magic


@pytest.mark.parametrize(("parser", "line", "isolate_line"), [
    (magics.UTS, "box --timeout 3 --sh", "--uts --hostname box --timeout 3.0 --sh"),
    (magics.UTS, "--export a,b box", "--uts --hostname box --export a,b"),
    (magics.NETNS, "r1 --pid --no-lo", "--netns r1 --pid --no-lo"),
    (magics.NETNS, "r1 --user --uts --hostname x",
     "--netns r1 --uts --user --hostname x"),
    (magics.NETNS, "r1 --readonly --bind /data:rw",
     "--netns r1 --readonly --tmpfs-size 64m --bind /data:rw"),
    (magics.NETNS, "r1 --seccomp --caps all --pids 5 --memory 1G",
     "--netns r1 --seccomp --caps all --pids 5 --memory 1G"),
    (magics.UTS, "b --cpu-time 3 --nofile 9", "--uts --hostname b --cpu-time 3 --nofile 9"),
])
def test_the_shorthands_hand_off_to_isolate(parser, line, isolate_line):
    args = magicargs.parse_line(parser, line)
    settings = {"uts": True} if parser is magics.UTS else {"netns": args.name}
    handed = magics.as_isolate_args(args, **settings)
    assert handed == magics.ISOLATE.parse_args(isolate_line.split())


def test_a_line_parsed_again_comes_back_as_a_fresh_namespace():
    """Lines are parsed once (argparse is slow): a magic may set attributes on what it gets
    (``--all`` sets each namespace's), which must not reach the next cell with that line."""
    first = magicargs.parse_line(magics.ISOLATE, "--pid --net")
    first.mount = first.all = True
    again = magicargs.parse_line(magics.ISOLATE, "--pid --net")
    assert (again.pid, again.net, bool(again.mount), again.all) == (True, True, False, False)
    assert again is not first


def test_a_bad_line_is_refused_every_time():
    for _ in range(2):
        assert "unrecognized arguments: --pdi" in one_line(magics.ISOLATE, "--pdi")


def test_a_cell_is_compiled_once_until_ipythons_transforms_change():
    """%%isolate compiles a cell's body once (IPython syntax included); an added transform
    (an extension's) compiles it again; a cell that does not parse is refused each time."""
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    transformed = []
    transform = shell.transform_cell
    shell.transform_cell = lambda cell: transformed.append(cell) or transform(cell)
    try:
        for _ in range(3):
            magics._python_cell(shell, "x = 2\nx * 21", [])
        assert transformed == ["x = 2\nx * 21"]

        def shout(lines: list[str]) -> list[str]:
            return [line.replace("21", "10") for line in lines]
        shell.input_transformers_post.append(shout)
        namespace: dict = {}
        shell.user_ns = namespace
        assert magics._python_cell(shell, "x = 2\nx * 21", [])() == (20, {})
        assert len(transformed) == 2
        shell.input_transformers_post.remove(shout)
        for _ in range(2):
            with pytest.raises(UsageError, match="isolated cell, line 1"):
                magics._python_cell(shell, "x = = 1", [])
    finally:
        InteractiveShell.clear_instance()
