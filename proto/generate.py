"""Generate peat_sync/generated from proto/sidecar.proto with betterproto2.

    python proto/generate.py           # rewrite peat_sync/generated
    python proto/generate.py --check   # exit 1 if the committed code is out of date

The generated code is committed, so users need neither protoc nor the compiler plugin.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO = ROOT / "proto" / "sidecar.proto"
GENERATED = ROOT / "peat_sync" / "generated"
OPTIONS = "client_generation=async,server_generation=async,google_protobuf_descriptors"


def generate(out: Path) -> None:
    """Write the generated package into the empty directory `out`."""
    # The compiler formats its output with the formatter settings it finds from its working
    # directory; running it in `out` keeps the output independent of this project's settings.
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{PROTO.parent}",
            f"--python_betterproto2_out={out}",
            f"--python_betterproto2_opt={OPTIONS}",
            str(PROTO),
        ],
        cwd=out,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"protoc failed on {PROTO}:\n{result.stderr}")


def differences(expected: Path, actual: Path) -> list[str]:
    """Relative paths that differ between two trees, ignoring caches."""
    found: list[str] = []

    def walk(comparison: filecmp.dircmp[str], prefix: str) -> None:
        for name in comparison.left_only + comparison.right_only + comparison.diff_files:
            if name != "__pycache__":
                found.append(prefix + name)
        for name, sub in comparison.subdirs.items():
            if name != "__pycache__":
                walk(sub, f"{prefix}{name}/")

    walk(filecmp.dircmp(expected, actual, ignore=["__pycache__"]), "")
    return sorted(found)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--check", action="store_true", help="only check that peat_sync/generated is current"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp)
        generate(fresh)
        if not args.check:
            shutil.rmtree(GENERATED, ignore_errors=True)
            shutil.copytree(fresh, GENERATED)
            print(f"generated {GENERATED.relative_to(ROOT)} from {PROTO.relative_to(ROOT)}")
            return 0
        stale = differences(fresh, GENERATED)
    if stale:
        print(
            "peat_sync/generated is out of date with proto/sidecar.proto: "
            + ", ".join(stale)
            + ". Run: python proto/generate.py",
            file=sys.stderr,
        )
        return 1
    print("peat_sync/generated matches proto/sidecar.proto")
    return 0


if __name__ == "__main__":
    sys.exit(main())
