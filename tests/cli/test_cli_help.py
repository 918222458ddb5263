"""Every command and option of the ``ftpipe`` tree says what it does and shows an example."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli.main import build_parser, main


def _parsers(
    parser: argparse.ArgumentParser, path: str = "ftpipe"
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    ensure = getattr(parser, "ensure_options", None)
    if ensure is not None:
        ensure()  # options are added on first use; the audit needs them all
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _parsers(child, f"{path} {name}")


def _subcommand_helps(parser: argparse.ArgumentParser) -> dict[str, str | None]:
    return {
        choice.dest: choice.help
        for action in parser._actions
        if isinstance(action, argparse._SubParsersAction)
        for choice in action._choices_actions
    }


def _shown_in(epilog: str, flags: list[str]) -> bool:
    return any(re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", epilog) for flag in flags)


def test_every_command_option_has_help_and_an_example() -> None:
    problems: list[str] = []
    paths = []
    for path, parser in _parsers(build_parser()):
        paths.append(path)
        epilog = parser.epilog or ""
        if not re.search(r"^examples?:", epilog, re.MULTILINE):
            problems.append(f"{path}: no 'examples:' section in its epilog")
        problems += [
            f"{path} {name}: subcommand without help"
            for name, h in _subcommand_helps(parser).items()
            if not h
        ]
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction | argparse._HelpAction):
                continue
            name = f"{path} {'/'.join(action.option_strings) or action.metavar or action.dest}"
            if not action.help or action.help == argparse.SUPPRESS:
                problems.append(f"{name}: no help")
            # An option's example is in its help ("example: ...", "e.g. ...") or in its command's examples.
            elif action.option_strings and not (
                re.search(r"\b(example|e\.g\.)", action.help) or _shown_in(epilog, action.option_strings)
            ):
                problems.append(f"{name}: no example (in its help or in the examples of '{path} --help')")
    assert not problems, "\n".join(problems)
    expected = {"ftpipe run", "ftpipe validate", "ftpipe sweep", "ftpipe backend serve", "ftpipe chat"}
    expected |= {f"ftpipe jobs {c}" for c in ("list", "show", "events", "cancel", "pause", "resume")}
    assert expected <= set(paths)


def test_the_audit_catches_an_option_without_an_example() -> None:
    parser = argparse.ArgumentParser(epilog="examples:\n  tool --shown 1\n")
    parser.add_argument("--shown", help="in the examples")
    parser.add_argument("--shown-too", help="not the same flag as --shown")
    flags = {
        a.option_strings[0]: _shown_in(parser.epilog or "", a.option_strings) for a in parser._actions[1:]
    }
    assert flags == {"--shown": True, "--shown-too": False}


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert re.fullmatch(r"ftpipe \d+\.\d+\S*\n", out), out


def test_help_of_the_api_commands_imports_nothing_heavy() -> None:
    code = (
        "import sys, contextlib, io\n"
        "from cli.main import main\n"
        "for argv in (['jobs', '--help'], ['jobs', 'events', '--help'], ['chat', '--help']):\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        try:\n"
        "            main(argv)\n"
        "        except SystemExit as e:\n"
        "            assert e.code == 0, (argv, e.code)\n"
        "print([m for m in ('prefect', 'torch', 'pandas', 'transformers', 'fastapi') if m in sys.modules])\n"
    )
    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=repo, check=True)
    assert proc.stdout.strip() == "[]"
