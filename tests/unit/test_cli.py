"""The command line explains itself and never silently does nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mediacore.cli import main


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
    ("argv", "out"),
    [
        (["cdr", "list"], "call_id,sip_call_id,number,owner,caller,target,start,answer,end,"
                          "duration,disposition,sip_status,hangup_by,recording,node,"
                          "recording_error\n"),
        (["cdr", "list", "--format", "json"], "[]\n"),
        (["retention", "sweep"], "retention: 0 recordings deleted"),
    ],
)
def test_records_commands_work_on_an_empty_storage_dir(
    argv: list[str], out: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)  # without -c: the bundled example, storage in ./var
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith(out)
    assert "not built yet" not in captured.err


def test_cdr_export_requires_an_owner(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["cdr", "export", "--out", "x"])
    assert exit_info.value.code == 2
    assert "--owner" in capsys.readouterr().err


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


def test_check_config_catches_numbers_that_are_the_same_and_missing_prompts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "plan.toml"
    path.write_text(
        '[storage]\nannouncements = "none-here"\n'
        '[[number]]\nnumber = "0900123456"\nowner = "a"\ntargets = ["sip:a@127.0.0.1:5070"]\n'
        'record = true\n'
        '[[number]]\nnumber = "+31900123456"\nowner = "b"\ntargets = ["sip:b@127.0.0.1:5070"]\n'
    )
    assert main(["check-config", str(path)]) == 1
    err = capsys.readouterr().err
    assert "numbers '0900123456' and '+31900123456' are both +31900123456" in err
    assert f"{path}: number[0].announcement: no prompt 'recording-notice'" in err
