"""The compile step: main__ placement, checks, and bin/exec."""

import os
import subprocess
import sys

from rewind import compile as rcompile


def _src(tmp_path, files):
    src = tmp_path / "src"
    src.mkdir()
    for name, text in files.items():
        path = src / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return src


def test_plain_source_becomes_main__and_exec_starts_the_launcher(tmp_path):
    src = _src(tmp_path, {"exec": "def niam(a):\n    return a\n"})
    out = tmp_path / "bin"
    assert rcompile.main(["niam", str(src), str(out)]) == 0
    assert (out / "main__.py").is_file()
    script = (out / "exec").read_text()
    assert "-m rewind.launcher --main niam" in script
    assert os.access(out / "exec", os.X_OK)


def test_zip_dunder_main_becomes_main__(tmp_path):
    src = _src(tmp_path, {"__main__.py": "from helper import f\n", "helper.py": "f = 1\n"})
    out = tmp_path / "bin"
    assert rcompile.main(["main", str(src), str(out)]) == 0
    assert (out / "main__.py").is_file() and (out / "helper.py").is_file()


def test_syntax_error_is_printed_and_fails(tmp_path, capsys):
    src = _src(tmp_path, {"exec": "def main(a):\n      return {}\n  oops\n"})
    assert rcompile.main(["main", str(src), str(tmp_path / "bin")]) == 1
    assert "indent" in capsys.readouterr().out


def test_zip_without_main_is_reported(tmp_path, capsys):
    src = _src(tmp_path, {"other.py": "x = 1\n"})
    assert rcompile.main(["main", str(src), str(tmp_path / "bin")]) == 1
    assert "Zip file does not include" in capsys.readouterr().out


def test_invalid_virtualenv_is_reported(tmp_path, capsys):
    src = _src(tmp_path, {"__main__.py": "def main(a):\n    return a\n", "virtualenv/x": ""})
    assert rcompile.main(["main", str(src), str(tmp_path / "bin")]) == 1
    assert "Invalid virtualenv" in capsys.readouterr().out


def test_bad_entry_point_name_is_refused(tmp_path, capsys):
    src = _src(tmp_path, {"exec": "def main(a):\n    return a\n"})
    assert rcompile.main(["main; rm -rf /", str(src), str(tmp_path / "bin")]) == 1
    assert "not a valid Python function name" in capsys.readouterr().out


def test_execution_env_mismatch_stops_bin_exec(tmp_path, monkeypatch):
    monkeypatch.setenv("__OW_EXECUTION_ENV", "openwhisk/action-python-v3.11")
    src = _src(tmp_path, {"exec": "def main(a):\n    return a\n"})
    out = tmp_path / "bin"
    assert rcompile.main(["main", str(src), str(out)]) == 0
    env = {"__OW_EXECUTION_ENV": "other", "PATH": os.environ["PATH"]}
    proc = subprocess.run([str(out / "exec")], env=env, capture_output=True, text=True)
    assert proc.returncode == 1
    assert "Execution environment version mismatch" in proc.stdout
    assert sys.executable
