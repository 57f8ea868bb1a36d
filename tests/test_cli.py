import subprocess
import sys

from dmaphys.cli import main


def test_version(capsys):
    try:
        main(["--version"])
    except SystemExit as e:
        assert e.code == 0
    assert "dmaphys" in capsys.readouterr().out


def test_info(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "swiotlb" in out and "System RAM" in out


def test_console_entry_module(tmp_path):
    # run outside the checkout so the installed package (with its compiled core) is imported
    r = subprocess.run([sys.executable, "-m", "dmaphys", "info"], capture_output=True, text=True,
                       cwd=tmp_path)
    assert r.returncode == 0, r.stderr
