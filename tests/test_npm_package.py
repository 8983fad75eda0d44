"""The browser client as an npm package: installed from its folder and type-checked by ``tsc``.

A Vue or React app imports it as it imports any package (``import { HybridClient } from
"flask-hybrid"``); these tests do exactly that in a throwaway project, with the repository's own
TypeScript (``node_modules/.bin/tsc``), offline.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from packaging.version import Version

import flask_hybrid

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIR = ROOT / "flask_hybrid" / "static"
TSC = ROOT / "node_modules" / ".bin" / "tsc"

USES_THE_CLIENT = """\
import { HybridClient, HybridError } from "flask-hybrid";
import type { ExchangeInfo, HybridErrorCode } from "flask-hybrid";

export async function placeOrder(total: number): Promise<unknown> {
  const seen: ExchangeInfo[] = [];
  const client: HybridClient = await HybridClient.connect({
    format: "jwe",
    baseUrl: "https://api.example.com",
    onExchange: (exchange) => seen.push(exchange),
  });
  try {
    const response: Response = await client.fetch("/api/orders", {
      method: "POST",
      body: { total },
    });
    return await response.json();
  } catch (error) {
    if (error instanceof HybridError) {
      const code: HybridErrorCode = error.code;
      const retryAfter: number | null = error.retryAfter;
      throw new Error(`${code} (${error.status}), retry after ${retryAfter ?? "-"}`);
    }
    throw error;
  } finally {
    await client.close();
  }
}
"""

#: The same import with a format the declarations do not allow: tsc must refuse it.
WRONG_FORMAT = """\
import { HybridClient } from "flask-hybrid";

export const client = HybridClient.connect({ format: "nope" });
"""


def npm_version(python_version: str) -> str:
    """The npm (SemVer) spelling of a PEP 440 version: ``0.2.0.dev0`` -> ``0.2.0-dev.0``."""
    version = Version(python_version)
    labels = {"a": "alpha", "b": "beta", "rc": "rc"}
    prerelease = []
    if version.pre is not None:
        prerelease.append(f"{labels[version.pre[0]]}.{version.pre[1]}")
    if version.dev is not None:
        prerelease.append(f"dev.{version.dev}")
    release = ".".join(str(part) for part in (*version.release, 0, 0)[:3])
    return release + ("-" + ".".join(prerelease) if prerelease else "")


def run(command: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny ES-module project with the package installed from its folder, as a user would."""
    npm = shutil.which("npm")
    assert npm, "npm is required to install the browser client as a package"
    assert TSC.is_file(), "run `npm ci` (make test does): it installs typescript"
    folder = tmp_path_factory.mktemp("npm-project")
    (folder / "package.json").write_text(
        json.dumps({"name": "uses-flask-hybrid", "private": True, "type": "module"}),
        encoding="utf-8",
    )
    installed = run(
        [npm, "install", "--offline", "--no-audit", "--no-fund", str(PACKAGE_DIR)], folder
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    return folder


def type_check(project: Path, source: str, *, module: str, resolution: str) -> str:
    """Run ``tsc --noEmit --strict`` over ``source``; return its output, with the exit status."""
    (project / "main.ts").write_text(source, encoding="utf-8")
    (project / "tsconfig.json").write_text(
        json.dumps(
            {
                "compilerOptions": {
                    "strict": True,
                    "noEmit": True,
                    "target": "es2022",
                    "lib": ["es2022", "dom"],
                    "module": module,
                    "moduleResolution": resolution,
                    "skipLibCheck": False,  # check hybrid.d.ts itself too
                },
                "files": ["main.ts"],
            }
        ),
        encoding="utf-8",
    )
    result = run([str(TSC), "-p", ".", "--listFiles"], project)
    return f"exit {result.returncode}\n{result.stdout}{result.stderr}"


RESOLUTIONS = [
    pytest.param("nodenext", "nodenext", id="node"),
    pytest.param("esnext", "bundler", id="bundler"),
]


@pytest.mark.parametrize(("module", "resolution"), RESOLUTIONS)
def test_typescript_app_type_checks_against_the_package(
    project: Path, module: str, resolution: str
) -> None:
    output = type_check(project, USES_THE_CLIENT, module=module, resolution=resolution)
    assert output.startswith("exit 0\n"), output
    assert "flask_hybrid/static/hybrid.d.ts" in output  # the types came from the package


@pytest.mark.parametrize(("module", "resolution"), RESOLUTIONS)
def test_a_wrong_call_does_not_type_check(project: Path, module: str, resolution: str) -> None:
    output = type_check(project, WRONG_FORMAT, module=module, resolution=resolution)
    assert not output.startswith("exit 0\n"), output
    assert "main.ts(3," in output and "TS2322" in output and '"nope"' in output, output


def test_the_package_loads_in_node_by_its_name(project: Path) -> None:
    node = shutil.which("node")
    assert node, "Node.js is required"
    script = 'const m = await import("flask-hybrid"); console.log(typeof m.HybridClient.connect);'
    result = run([node, "--input-type=module", "-e", script], project)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "function"


def test_the_package_ships_only_the_module_and_its_types(tmp_path: Path) -> None:
    npm = shutil.which("npm")
    assert npm
    packed = run([npm, "pack", "--dry-run", "--json", str(PACKAGE_DIR)], tmp_path)
    assert packed.returncode == 0, packed.stderr
    (manifest,) = json.loads(packed.stdout)
    assert {entry["path"] for entry in manifest["files"]} == {
        "hybrid.js",
        "hybrid.d.ts",
        "package.json",
    }


def test_package_version_is_the_python_version() -> None:
    package = json.loads((PACKAGE_DIR / "package.json").read_text(encoding="utf-8"))
    assert package["version"] == npm_version(flask_hybrid.__version__)
    assert package["exports"]["."] == {"types": "./hybrid.d.ts", "default": "./hybrid.js"}


@pytest.mark.parametrize(
    ("python_version", "expected"),
    [
        pytest.param("0.2.0.dev0", "0.2.0-dev.0", id="dev"),
        pytest.param("1.0rc2", "1.0.0-rc.2", id="rc"),
        pytest.param("1.2.3", "1.2.3", id="final"),
    ],
)
def test_npm_version(python_version: str, expected: str) -> None:
    assert npm_version(python_version) == expected
