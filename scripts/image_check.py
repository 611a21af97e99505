"""`make image-check`: build the container image here and check it from the inside.

No Docker engine and no registry on these machines, so (scripts/image_build.py has the how):
a stand-in for `python:3.11-slim` from Debian's archive (once per machine), then the project's
image with `podman build --format docker`. Checked in the built image:

1. its config (`podman image inspect`): a non-root user, ENTRYPOINT, CMD and HEALTHCHECK as
   README and SPEC document them;
2. its file system: no pip and no compiler on its PATH, no pip importable by its Pythons;
3. `newswatch check-config` on the shipped config;
4. `scheduler` and `worker`, run from the image's file system with chroot as the image's user
   (`podman run` cannot start containers here), against a Redis, the demo's feed and a webhook
   receiver, all on 127.0.0.1: the demo's DeepSeek alert arrives, signed; the HEALTHCHECK command
   fails before they run and passes once both do;
5. its size, the biggest layers named, the Dockerfile's own layers within a budget
   (NEWSWATCH_IMAGE_BUDGET_MB, default 110; docs/decisions.md says why).

Exit 0 when all pass, else 1 naming the failed step. Whatever it starts is stopped and its temp
dir removed, on failure, Ctrl-C and SIGTERM too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

sys.path.insert(0, str(Path(__file__).resolve().parent))
from image_build import (
    BASE,
    IMAGE,
    STORE,
    WORK_PREFIX,
    CheckFailed,
    Podman,
    build_image,
    ensure_standin,
    ensure_tools,
    prune,
    sweep,
    tail,
)
from image_run import Image, check_pipeline, run_in_image

BUDGET_MB = float(os.environ.get("NEWSWATCH_IMAGE_BUDGET_MB", "110"))
# As documented: README "Running it as a service" and SPEC §1-2.
DOCUMENTED = {
    "Entrypoint": ["newswatch"],
    "Cmd": ["run"],
    "Healthcheck": ["CMD", "newswatch", "health"],
}
PIP = re.compile(r"pip(\d+(\.\d+)?)?")
COMPILER = re.compile(r"cc|c\+\+|gcc|g\+\+|clang|clang\+\+|tcc|[\w.]+-(gcc|g\+\+)(-\d+)?")
FIND_PIP = "import importlib.util, sys; sys.exit(3 if importlib.util.find_spec('pip') else 0)"
MB = 1_000_000


def main() -> int:
    if os.geteuid() != 0:
        print("image-check: needs root (podman's storage, chroot and mounts)", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, _exit_on_signal)
    signal.signal(signal.SIGHUP, _exit_on_signal)
    started = time.monotonic()
    podman = Podman.choose()
    work = Path(tempfile.mkdtemp(prefix=WORK_PREFIX, dir="/var/tmp"))
    try:
        with machine_lock():
            run_checks(podman, work)
    except CheckFailed as e:
        print(f"image-check: FAILED: {e}", file=sys.stderr, flush=True)
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"image-check: all checks passed in {time.monotonic() - started:.0f} s", flush=True)
    print(
        "image-check: (base: a stand-in made from Debian bookworm's Python 3.11, not the official "
        "python:3.11-slim; run: chroot as the image's user, not `podman run`)"
    )
    return 0


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through every `finally`: nothing is left running


@contextlib.contextmanager
def machine_lock() -> Iterator[None]:
    """One image-check at a time per machine: they share the storage and prune it."""
    STORE.mkdir(parents=True, exist_ok=True)
    with (STORE / "lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print("image-check: waiting for another image-check on this machine ...", flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@contextlib.contextmanager
def step(name: str) -> Iterator[None]:
    print(f"image-check: {name} ...", flush=True)
    started = time.monotonic()
    try:
        yield
    except CheckFailed as e:
        raise CheckFailed(f"{name}: {e}") from None
    print(f"image-check:   ok ({time.monotonic() - started:.1f} s)", flush=True)


def run_checks(podman: Podman, work: Path) -> None:
    with step("tools (podman, buildah, mmdebstrap)"):
        ensure_tools()
        sweep(podman, work)
    needed = {"overlay": 2_000 * MB}.get(podman.driver, 8_000 * MB)  # vfs copies every layer whole
    if shutil.disk_usage(STORE).free < needed:
        raise CheckFailed(f"less than {needed // MB} MB free under {STORE}, which the builds need")
    with step(f"stand-in base image {BASE} (storage: {podman.driver})"):
        print(f"image-check:   {ensure_standin(podman, work)}", flush=True)
    try:
        with step(f"build {IMAGE} from the Dockerfile"):
            build_image(podman, work / "build.log")
        with step("image config: user, ENTRYPOINT, CMD, HEALTHCHECK"):
            config = check_config(podman)
        with container_root(podman) as root:
            image = dataclasses.replace(config, root=root)
            with step("no pip, no compiler in the image"):
                check_no_pip_or_compiler(image, work)
            with step("newswatch check-config on the shipped config"):
                check_shipped_config(image, work)
            with step("scheduler + worker from the image deliver the DeepSeek alert; health turns 0"):
                print(f"image-check:   {check_pipeline(image, work)}", flush=True)
            with step("size"):
                report_size(podman, image)
    finally:
        prune(podman)


def check_config(podman: Podman) -> Image:
    """The image's config as README and SPEC document it; the image to run (its root comes later)."""
    found = podman.inspect(IMAGE)
    if found is None:
        raise CheckFailed(f"{IMAGE} is not there after the build")
    config = found.get("Config") or {}
    assert isinstance(config, dict)
    problems = []
    user = str(config.get("User") or "")
    if user.split(":")[0] in ("", "0", "root"):
        problems.append(f"runs as root (User={user!r}); the Dockerfile must end with a non-root USER")
    actual = {"Entrypoint": config.get("Entrypoint"), "Cmd": config.get("Cmd")}
    actual["Healthcheck"] = (found.get("Healthcheck") or config.get("Healthcheck") or {}).get("Test")  # type: ignore[union-attr]
    for key, documented in DOCUMENTED.items():
        if actual[key] != documented:
            problems.append(f"{key} is {actual[key]!r}, README and SPEC document {documented!r}")
    if problems:
        raise CheckFailed("; ".join(problems))
    env = dict(item.split("=", 1) for item in config.get("Env") or [])
    print(f"image-check:   User={user} Entrypoint={actual['Entrypoint']} Cmd={actual['Cmd']} "
          f"Healthcheck={actual['Healthcheck']}")  # fmt: skip
    return Image(
        root=Path("/nonexistent"), user=user, env=env, workdir=str(config.get("WorkingDir") or "/"),
        entrypoint=DOCUMENTED["Entrypoint"], healthcheck=DOCUMENTED["Healthcheck"][1:],
        size=int(str(found.get("Size") or 0)),
    )  # fmt: skip


@contextlib.contextmanager
def container_root(podman: Podman) -> Iterator[Path]:
    """A container's file system made from the image (created, never started): a copy the runs
    may write to (/tmp), thrown away afterwards."""
    name = f"newswatch-image-check-{os.getpid()}"
    podman("create", "--pull=never", "--name", name, IMAGE)
    root: Path | None = None
    try:
        root = Path(podman("mount", name).strip())
        yield root
    finally:
        if root is not None:
            kill_leftovers(root)
        podman.quiet("umount", name)
        podman.quiet("rm", "--force", name)


def kill_leftovers(root: Path) -> None:
    """Any process still rooted in our container's file system is ours: stop it."""
    for proc in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if proc.name.isdigit() and os.readlink(proc / "root") == str(root):
                os.kill(int(proc.name), signal.SIGKILL)
                print(f"image-check: killed a leftover process {proc.name} in the image", file=sys.stderr)


def check_no_pip_or_compiler(image: Image, work: Path) -> None:
    found = []
    pythons = []
    for directory in image.env.get("PATH", "").split(":"):
        with contextlib.suppress(OSError):
            names = os.listdir(image.root / directory.lstrip("/"))
            found += [f"{directory}/{n}" for n in names if PIP.fullmatch(n) or COMPILER.fullmatch(n)]
            if not (image.root / directory.lstrip("/")).is_symlink():  # /bin -> usr/bin: seen once
                pythons += [f"{directory}/{n}" for n in names if n in ("python", "python3")]
    for python in pythons:
        rc, output = run_in_image(image, [python, "-c", FIND_PIP], {}, work / "find-pip.log")
        if rc == 3:
            found.append(f"pip importable by {python}")
        elif rc != 0:
            raise CheckFailed(f"{python} in the image failed (exit {rc}):\n{tail(output)}")
    if found:
        raise CheckFailed("found in the final stage: " + ", ".join(found))
    print(f"image-check:   none on PATH; pip not importable by {', '.join(pythons)}")


def check_shipped_config(image: Image, work: Path) -> None:
    rc, output = run_in_image(image, [*image.entrypoint, "check-config"], {}, work / "check-config.log")
    if rc != 0:
        raise CheckFailed(f"exit {rc}:\n{tail(output)}")
    print(f"image-check:   {output.strip().splitlines()[-1]}")


def report_size(podman: Podman, image: Image) -> None:
    history = json.loads(podman("history", "--format", "json", "--no-trunc", IMAGE))
    base = json.loads(podman("history", "--format", "json", BASE))
    own = history[: len(history) - len(base)]  # newest first: the Dockerfile's own layers
    own_size = sum(layer["size"] for layer in own)
    print(
        f"image-check:   {IMAGE}: {image.size / MB:.1f} MB; the stand-in base "
        f"{(image.size - own_size) / MB:.1f} MB, the Dockerfile's layers {own_size / MB:.1f} MB "
        f"(budget {BUDGET_MB:.0f} MB). Biggest layers:"
    )
    for layer in sorted(history, key=lambda layer: -layer["size"])[:3]:
        print(f"image-check:     {layer['size'] / MB:7.1f} MB  {describe(layer['CreatedBy'])}")
    print(f"image-check:   biggest packages in the venv: {biggest_packages(image)}")
    if own_size > BUDGET_MB * MB:
        raise CheckFailed(f"the Dockerfile's layers take {own_size / MB:.1f} MB, over the budget")


def describe(created_by: str) -> str:
    text = re.sub(r"^/bin/sh -c (#\(nop\) )?", "", created_by)
    text = re.sub(r"(dir|file):[0-9a-f]{64}", "…", text)
    return re.sub(r"\s+", " ", text).strip()[:100]


def biggest_packages(image: Image) -> str:
    """The entrypoint's venv, found through the image's PATH, by size on disk."""
    for directory in image.env.get("PATH", "").split(":"):
        if (image.root / directory.lstrip("/") / image.entrypoint[0]).is_file():
            venv = image.root / directory.lstrip("/") / ".."
            sizes = {p.name: du(p) for site in venv.glob("lib/python*/site-packages") for p in site.iterdir()}
            top = sorted(sizes.items(), key=lambda item: -item[1])[:5]
            return ", ".join(f"{name} {size / MB:.1f} MB" for name, size in top)
    return "(entrypoint not found on PATH)"


def du(path: Path) -> int:
    if not path.is_dir():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


if __name__ == "__main__":
    sys.exit(main())
