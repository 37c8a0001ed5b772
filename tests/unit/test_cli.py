"""The command line explains itself and never silently does nothing."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mediacore.cli import EXIT_NOT_BUILT, main


def test_help_lists_every_contract_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for command in ("serve", "check-config", "cdr", "retention"):
        assert command in out


def test_no_command_prints_help_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage: mediacore" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [["cdr", "list"], ["retention", "sweep"]],
)
def test_unbuilt_commands_say_so(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == EXIT_NOT_BUILT
    assert "not built yet" in capsys.readouterr().err


def test_python_dash_m_is_the_same_program() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mediacore", "--version"],
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert result.returncode == 0
    assert result.stdout.startswith("mediacore ")


def test_check_config_accepts_the_bundled_example(capsys: pytest.CaptureFixture[str]) -> None:
    from mediacore.config import example_config_path

    assert main(["check-config", str(example_config_path())]) == 0
    assert ": ok (1 numbers" in capsys.readouterr().out


def test_check_config_names_file_and_key(
    tmp_path: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.toml"  # type: ignore[operator]
    bad.write_text('[rtp]\ninactivity_timeout = "soon"\n')
    assert main(["check-config", str(bad)]) == 1
    assert f"{bad}: rtp.inactivity_timeout: expected an integer or a number, got str" in (
        capsys.readouterr().err
    )
