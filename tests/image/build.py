"""Build peat-sync's image from the Containerfile here, where no container registry is
reachable: FROM a Debian base made on this machine with debootstrap, imported into podman's
store. Run as a script (`python -m tests.image.build`) it builds and prints the figures: the
time each step took and the image's size.

Needs root, and Debian's debootstrap, podman and buildah (.ci/run installs them).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from tests.helpers.paths import ROOT

BASE = "localhost/peat-sync-base:bookworm"
IMAGE = "localhost/peat-sync:test"
TOOLS = ("debootstrap", "podman", "buildah")
# What the base needs for the Containerfile: python3 -m venv, pip's certificates, useradd.
BASE_PACKAGES = "python3,python3-venv,ca-certificates"
BUILD_TIMEOUT = 900.0
# Set (by .ci/run), it makes an image that cannot be built here a failure, not a skip.
REQUIRE_IMAGE = "PEAT_REQUIRE_IMAGE"


@dataclass
class Built:
    image: str
    base_seconds: float | None  # None: the base was already in podman's store
    build_seconds: float
    size_bytes: int
    base_size_bytes: int


def missing() -> str | None:
    """Why the image cannot be built here, or None."""
    if os.geteuid() != 0:
        return "building the image needs root (debootstrap, and buildah's chroot isolation)"
    absent = [tool for tool in TOOLS if shutil.which(tool) is None]
    if absent:
        return f"{', '.join(absent)} not found: apt-get install {' '.join(TOOLS)}"
    return None


def run(
    *command: str, stdin: IO[bytes] | None = None, timeout: float = BUILD_TIMEOUT
) -> subprocess.CompletedProcess[str]:
    """Run `command` to completion; CalledProcessError (see `failure`) if it fails."""
    return subprocess.run(
        command, stdin=stdin, check=True, text=True, capture_output=True, timeout=timeout
    )


def failure(exc: subprocess.CalledProcessError) -> str:
    """What a failed `run` says: its command line and its output."""
    return f"{' '.join(exc.cmd)} failed:\n{exc.stdout}{exc.stderr}"


def image_exists(name: str) -> bool:
    return subprocess.run(["podman", "image", "exists", name], timeout=60).returncode == 0


def image_size(name: str) -> int:
    inspected = json.loads(run("podman", "image", "inspect", name).stdout)
    return int(inspected[0]["Size"])


def make_base() -> None:
    """A minimal Debian with Python, as `BASE`. It trusts what this machine trusts (its CA
    bundle, for pip too), so that pip in the build reaches the package index as the machine
    does, through an intercepting proxy included."""
    with tempfile.TemporaryDirectory(prefix="peat-base-") as work:
        root = Path(work) / "root"
        run("debootstrap", "--variant=minbase", f"--include={BASE_PACKAGES}", "bookworm", str(root))
        shutil.rmtree(root / "var" / "cache" / "apt" / "archives", ignore_errors=True)
        shutil.rmtree(root / "var" / "lib" / "apt" / "lists", ignore_errors=True)
        bundle = Path("/etc/ssl/certs/ca-certificates.crt")
        shutil.copyfile(bundle, root / bundle.relative_to("/"))
        (root / "etc" / "pip.conf").write_text(f"[global]\ncert = {bundle}\n")
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        run("podman", "import", "-", BASE, stdin=tar.stdout)
        assert tar.wait(BUILD_TIMEOUT) == 0


def build() -> Built:
    """Make the base unless podman has it, then build the image from the Containerfile."""
    base_seconds = None
    if not image_exists(BASE):
        started = time.monotonic()
        make_base()
        base_seconds = time.monotonic() - started
    started = time.monotonic()
    run(
        "buildah", "bud", "--isolation", "chroot", "--network", "host",
        # The docker format keeps HEALTHCHECK, which the OCI format has no field for.
        "--format", "docker",
        # Cached layers: the tests build again after the script, and get the same image.
        "--layers",
        "--build-arg", f"BASE={BASE}",
        "-f", str(ROOT / "Containerfile"), "-t", IMAGE, str(ROOT),
    )  # fmt: skip
    return Built(
        IMAGE,
        base_seconds,
        time.monotonic() - started,
        image_size(IMAGE),
        image_size(BASE),
    )


def main() -> int:
    reason = missing()
    if reason:
        if os.environ.get(REQUIRE_IMAGE):
            print(f"cannot build the image: {reason} ({REQUIRE_IMAGE} is set)", file=sys.stderr)
            return 1
        print(f"skipping the image: {reason}", file=sys.stderr)
        return 0
    print(f"building {IMAGE} from {ROOT / 'Containerfile'} ...", file=sys.stderr, flush=True)
    try:
        built = build()
    except subprocess.CalledProcessError as exc:
        print(failure(exc), file=sys.stderr)
        return 1
    mib = 1 << 20
    base = "already made" if built.base_seconds is None else f"{built.base_seconds:.0f} s"
    print(f"base {BASE}: {base}, {built.base_size_bytes / mib:.0f} MiB")
    print(
        f"image {built.image}: built in {built.build_seconds:.0f} s,"
        f" {built.size_bytes / mib:.0f} MiB"
        f" ({(built.size_bytes - built.base_size_bytes) / mib:.0f} MiB over its base)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
