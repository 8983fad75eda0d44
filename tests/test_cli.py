"""``flask hybrid ...`` through the real ``flask`` command, as a user types it.

Each mistake ends in one ``Error: ...`` line naming the file or the key, exit status 1, and no
traceback; the apps are small modules written into ``tmp_path``.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

FLASK = Path(sys.executable).with_name("flask")  # the venv's console script

APP_WITHOUT_EXTENSION = """\
from flask import Flask

app = Flask(__name__)
"""

APP_WITH_KEY_FILE = """\
from flask import Flask
from flask_hybrid import HybridEncryption

app = Flask(__name__)
app.config["HYBRID_IDENTITY_KEYS"] = [{key_path!r}]
app.config["HYBRID_JWT_SECRET"] = "x" * 40
app.config["HYBRID_KEY_POOL_SIZE"] = 0
HybridEncryption(app)
"""

APP_WITH_ITS_OWN_BUG = """\
from flask import Flask

app = Flask(__name__)
raise RuntimeError("a bug in the app's own code")
"""


def flask_cli(folder: Path, *args: str, app: str | None = None) -> subprocess.CompletedProcess[str]:
    command = [str(FLASK)]
    if app is not None:
        command += ["--app", app]
    env = {key: value for key, value in os.environ.items() if not key.startswith("FLASK_")}
    return subprocess.run(
        [*command, "hybrid", *args],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *expected: str) -> str:
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output, output
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("Error: ")
    for text in expected:
        assert text in line, line
    return line


def write_app(folder: Path, name: str, source: str) -> str:
    (folder / f"{name}.py").write_text(source, encoding="utf-8")
    return name


def test_keygen_writes_a_private_key_only_its_owner_reads(tmp_path: Path) -> None:
    result = flask_cli(tmp_path, "keygen", "identity.pem", "--bits", "2048")
    assert result.returncode == 0, result.stderr
    key_file = tmp_path / "identity.pem"
    assert key_file.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----\n")
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_keygen_never_replaces_an_existing_file(tmp_path: Path) -> None:
    key_file = tmp_path / "identity.pem"
    key_file.write_text("the key in production\n", encoding="utf-8")
    result = flask_cli(tmp_path, "keygen", "identity.pem", "--bits", "2048")
    assert_one_line_error(result, "identity.pem already exists")
    assert key_file.read_text(encoding="utf-8") == "the key in production\n"


def test_keygen_into_a_missing_folder(tmp_path: Path) -> None:
    result = flask_cli(tmp_path, "keygen", "keys/identity.pem", "--bits", "2048")
    assert_one_line_error(result, "keys/identity.pem", "no folder keys")
    assert not (tmp_path / "keys").exists()


def test_keys_on_an_app_without_the_extension(tmp_path: Path) -> None:
    module = write_app(tmp_path, "plain_app", APP_WITHOUT_EXTENSION)
    result = flask_cli(tmp_path, "keys", app=module)
    assert_one_line_error(result, "'plain_app' does not use flask-hybrid", "HybridEncryption(app)")


@pytest.mark.parametrize(
    "key_path",
    [pytest.param("missing/identity.pem", id="relative"), pytest.param("", id="absolute")],
)
def test_keys_when_an_identity_key_file_does_not_exist(tmp_path: Path, key_path: str) -> None:
    key_path = key_path or str(tmp_path / "gone" / "identity.pem")
    module = write_app(tmp_path, "keyed_app", APP_WITH_KEY_FILE.format(key_path=key_path))
    result = flask_cli(tmp_path, "keys", app=module)
    line = assert_one_line_error(result, "HYBRID_IDENTITY_KEYS", repr(key_path))
    assert "No such file or directory" in line
    if not os.path.isabs(key_path):
        assert str(tmp_path / key_path) in line  # where it was looked for


def test_keys_prints_the_jwk_set_of_a_working_app(tmp_path: Path) -> None:
    assert flask_cli(tmp_path, "keygen", "identity.pem", "--bits", "2048").returncode == 0
    module = write_app(tmp_path, "keyed_app", APP_WITH_KEY_FILE.format(key_path="identity.pem"))
    result = flask_cli(tmp_path, "keys", app=module)
    assert result.returncode == 0, result.stderr
    jwks = json.loads(result.stdout)
    assert jwks["keys"] and {key["kty"] for key in jwks["keys"]} == {"RSA"}
    (kid,) = {key["kid"] for key in jwks["keys"]}  # one key (listed per use, if so)
    assert kid


def test_an_error_in_the_apps_own_code_keeps_its_traceback(tmp_path: Path) -> None:
    # only flask-hybrid's set-up errors are shortened; a bug elsewhere needs its traceback
    module = write_app(tmp_path, "buggy_app", APP_WITH_ITS_OWN_BUG)
    result = flask_cli(tmp_path, "keys", app=module)
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "a bug in the app's own code" in result.stderr


def test_keygen_hpke_writes_an_x25519_key(tmp_path: Path) -> None:
    from flask_hybrid.core.hpke import load_private_key

    result = flask_cli(tmp_path, "keygen", "hpke.pem", "--hpke")
    assert result.returncode == 0, result.stderr
    path = tmp_path / "hpke.pem"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = load_private_key(path.read_bytes())
    assert len(key.public_bytes) == 32
    again = flask_cli(tmp_path, "keygen", "hpke.pem", "--hpke")
    assert_one_line_error(again, "already exists")
    assert load_private_key(path.read_bytes()) == key


def test_keygen_hpke_refuses_bits(tmp_path: Path) -> None:
    result = flask_cli(tmp_path, "keygen", "hpke.pem", "--hpke", "--bits", "4096")
    assert result.returncode == 2 and "--bits" in result.stderr
    assert not (tmp_path / "hpke.pem").exists()
