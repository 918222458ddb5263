"""`ftpipe backend serve ...` and `ftpipe sweep ...` are real subparsers of the one tree, --help included."""

import pytest

from cli.main import main


@pytest.mark.parametrize(
    ("argv", "usage"),
    [(["backend", "serve", "--help"], "serve"), (["sweep", "--help"], "ftpipe sweep")],
)
def test_delegated_help_reaches_the_subcommand_parser(
    argv: list[str], usage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0
    assert usage in capsys.readouterr().out


def test_sweep_with_a_missing_file_fails_with_exit_2() -> None:
    assert main(["sweep", "/nonexistent/sweep.yaml"]) == 2
