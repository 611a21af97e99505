"""Building the container image on a machine with no Docker engine and no image registry.

Used by scripts/image_check.py (`make image-check`); the recipe measured on these machines is
../shared/notes/image-build-here.md. podman builds with chroot isolation in a storage of its own
(NEWSWATCH_IMAGE_STORE, default /var/lib/newswatch-image-check), so the stand-in base below never
passes for the real `python:3.11-slim` anywhere else on the machine.

The stand-in: `python:3.11-slim` cannot be pulled here, so it is made from Debian's archive
(bookworm: Python 3.11) with mmdebstrap, through the mirror apt already uses, once per machine.
Like the official image it has `python` in /usr/local/bin, pip and setuptools installed under
/usr/local (from Debian's bundled wheels, with their RECORD, so the Dockerfile can uninstall them)
and no EXTERNALLY-MANAGED marker; unlike it, its Python is Debian's build (Debian disables
ensurepip for it) and it has no `wheel` package.
"""

from __future__ import annotations

import configparser
import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STORE = Path(os.environ.get("NEWSWATCH_IMAGE_STORE", "/var/lib/newswatch-image-check"))
IMAGE = "localhost/newswatch:check"
WORK_PREFIX = "newswatch-image-check-"  # temp dirs, under /var/tmp: big enough for a base tarball
BASE = "docker.io/library/python:3.11-slim"  # the name the Dockerfile's FROM asks for
SUITE = "bookworm"  # Debian's release whose Python is 3.11, as in python:3.11-slim
TOOLS = ("podman", "buildah", "mmdebstrap")
STANDIN_LABEL = "io.newswatch.standin"
STANDIN_PACKAGES = "python3,python3-venv,ca-certificates"
# What Debian's own slim images leave out; merged /usr without the usrmerge package (and its perl).
MERGED_USR_HOOK = Path("/usr/share/mmdebstrap/hooks/merged-usr")
MMDEBSTRAP_OPTIONS = [
    "--variant=minbase",
    *([f"--hook-dir={MERGED_USR_HOOK}"] if MERGED_USR_HOOK.is_dir() else []),
    '--aptopt=Acquire::Retries "3"',
    '--aptopt=APT::Install-Recommends "false"',
    *(
        f"--dpkgopt=path-{rule}"
        for rule in (
            "exclude=/usr/share/man/*",
            "exclude=/usr/share/doc/*",
            "include=/usr/share/doc/*/copyright",
            "exclude=/usr/share/locale/*",
            "include=/usr/share/locale/locale.alias",
            "exclude=/usr/share/info/*",
            "exclude=/usr/share/lintian/*",
        )
    ),
]
STANDIN_CONTAINERFILE = """\
FROM localhost/newswatch-standin-debian
ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8
RUN ln -s /usr/bin/python3 /usr/local/bin/python \\
    && rm -f /usr/lib/python3.11/EXTERNALLY-MANAGED \\
    && wheel=$(ls /usr/share/python-wheels/pip-*.whl) \\
    && python "$wheel/pip" install --no-index --find-links=/usr/share/python-wheels pip setuptools \\
    && python -m pip --version
LABEL {label}="{key}"
CMD ["python3"]
"""


class CheckFailed(Exception):
    """A step of the image check failed; the message says what and why, for the person reading CI."""


def tail(text: str, lines: int = 25) -> str:
    return "\n".join("    " + line for line in text.rstrip().splitlines()[-lines:])


def run(argv: list[str], log: Path | None = None, what: str | None = None) -> str:
    """Run a host command; its output goes to `log` if given. Fails with the output's last lines."""
    what = what or argv[0]
    try:
        result = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=1800)
    except subprocess.TimeoutExpired:
        raise CheckFailed(f"{what} did not finish within 30 minutes") from None
    output = result.stdout + result.stderr
    if log is not None:
        with log.open("a", encoding="utf-8") as f:
            f.write(f"$ {' '.join(argv)}\n{output}\n")
    if result.returncode != 0:
        raise CheckFailed(f"{what} failed (exit {result.returncode}):\n{tail(output)}")
    return result.stdout


class Podman:
    """podman on the check's own storage (one per storage driver); every call names it."""

    def __init__(self, driver: str) -> None:
        self.driver = driver
        # runroot: podman's run-time state of this storage, on tmpfs so that a reboot clears it
        # (podman takes at most 50 characters there)
        runroot = f"/run/newswatch-{hashlib.sha256(str(STORE).encode()).hexdigest()[:8]}-{driver}"
        storage = ["--root", str(STORE / f"storage-{driver}"), "--runroot", runroot]
        self.prefix = ["podman", *storage, "--storage-driver", driver]

    @classmethod
    def choose(cls) -> Podman:
        """NEWSWATCH_IMAGE_DRIVER if set; else overlay where the kernel takes it (here: builds
        three times as fast as vfs, a fraction of the disk), else vfs, which works everywhere."""
        wanted = os.environ.get("NEWSWATCH_IMAGE_DRIVER")
        if wanted:
            return cls(wanted)
        STORE.mkdir(parents=True, exist_ok=True)
        kernel = Path("/proc/filesystems").read_text().split()
        below = subprocess.run(["stat", "-f", "-c", "%T", str(STORE)], capture_output=True, text=True).stdout
        return cls("overlay" if "overlay" in kernel and below.strip() != "overlayfs" else "vfs")

    def __call__(self, *args: str, log: Path | None = None) -> str:
        return run([*self.prefix, *args], log, what=f"podman {args[0]}")

    def quiet(self, *args: str) -> int:
        """For clean-up: never raises, the caller decides what a failure means."""
        argv = [*self.prefix, *args]
        return subprocess.run(argv, capture_output=True, stdin=subprocess.DEVNULL).returncode

    def inspect(self, image: str) -> dict[str, object] | None:
        result = subprocess.run([*self.prefix, "image", "inspect", image], capture_output=True, text=True)
        if result.returncode != 0:
            return None
        found: list[dict[str, object]] = json.loads(result.stdout)
        return found[0]


def ensure_tools() -> None:
    """podman, buildah and mmdebstrap from Debian's archive, installed where missing."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if not missing:
        return
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        raise CheckFailed(
            f"{', '.join(missing)} missing; install them (Debian: apt-get install {' '.join(TOOLS)})"
        )
    print(f"image-check: installing {' '.join(TOOLS)} with apt-get ...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    retries = ["-o", "Acquire::Retries=3"]
    output = ""
    for attempt in range(1, 4):
        subprocess.run(["apt-get", *retries, "update", "-qq"], env=env, capture_output=True)
        install = subprocess.run(
            ["apt-get", *retries, "install", "-y", "-qq", *TOOLS], env=env, capture_output=True, text=True
        )
        if install.returncode == 0:
            return
        output = install.stdout + install.stderr
        print(f"image-check: apt-get install failed (try {attempt} of 3)", flush=True)
        if attempt < 3:
            time.sleep(10 * attempt)  # a mirror hiccup: give it a moment before the next try
    raise CheckFailed(f"apt-get could not install {' '.join(TOOLS)}:\n{tail(output)}")


def debian_sources() -> list[str]:
    """The bookworm archive lines (main, updates, security) of the mirror apt uses here."""
    listed = run(
        [
            "apt-get",
            "indextargets",
            "--format",
            "$(TARGET_OF) $(IDENTIFIER) $(REPO_URI) $(RELEASE) $(COMPONENT)",
        ],
        what="apt-get indextargets",
    )
    wanted = [SUITE, f"{SUITE}-updates", f"{SUITE}-security"]
    lines: dict[str, str] = {}
    for fields in (line.split() for line in listed.splitlines()):
        if (
            len(fields) == 5
            and fields[:2] == ["deb", "Packages"]
            and fields[4] == "main"
            and fields[3] in wanted
        ):
            lines.setdefault(fields[3], f"deb {fields[2]} {fields[3]} main")
    if SUITE not in lines:
        raise CheckFailed(f"apt's sources name no Debian '{SUITE} main' archive to build the stand-in from")
    return [lines[suite] for suite in wanted if suite in lines]


def ensure_standin(podman: Podman, work: Path) -> str:
    """The stand-in base, built once per machine (and again when its recipe changes)."""
    sources = debian_sources()
    recipe = [SUITE, STANDIN_PACKAGES, MMDEBSTRAP_OPTIONS, STANDIN_CONTAINERFILE, sources]
    key = hashlib.sha256(json.dumps(recipe).encode()).hexdigest()[:16]
    found = podman.inspect(BASE)
    labels = (found or {}).get("Labels") or {}
    if isinstance(labels, dict) and labels.get(STANDIN_LABEL) == key:
        return f"cached ({key})"
    tarball = work / "standin.tar"
    log = work / "standin.log"
    options = [*MMDEBSTRAP_OPTIONS, f"--include={STANDIN_PACKAGES}"]
    run(["mmdebstrap", "--quiet", *options, SUITE, str(tarball), *sources], log, what="mmdebstrap")
    podman("import", str(tarball), "localhost/newswatch-standin-debian", log=log)
    tarball.unlink()
    context = work / "standin"
    context.mkdir()
    (context / "Containerfile").write_text(STANDIN_CONTAINERFILE.format(label=STANDIN_LABEL, key=key))
    podman(*build_options(), "-t", BASE, str(context), log=log)
    return f"built from {sources[0].split()[1]} ({key})"


def pip_mounts() -> list[str]:
    """`-v` options that give pip inside the build the host's way to the package index: the
    bundle PIP_CERT names, the machine-wide pip config files and the files they name, read-only
    at the same paths. Only RUN steps see them; nothing of them lands in a layer."""
    files: set[str] = set()
    cert = os.environ.get("PIP_CERT")
    if cert and Path(cert).is_file():
        files.add(cert)
    debug = subprocess.run([sys.executable, "-m", "pip", "config", "debug"], capture_output=True, text=True)
    section = ""
    for line in debug.stdout.splitlines():
        if not line.startswith(" "):
            section = line.rstrip(":")
        elif section == "global" and (match := re.fullmatch(r"\s+(/\S+), exists: True", line)):
            files |= {match[1], *named_files(match[1])}
    return [option for path in sorted(files) for option in ("-v", f"{path}:{path}:ro")]


def named_files(config_file: str) -> set[str]:
    parser = configparser.ConfigParser()
    parser.read(config_file)
    values = [value for section in parser.sections() for value in parser[section].values()]
    return {
        word for value in values for word in value.split() if word.startswith("/") and Path(word).is_file()
    }


def build_options() -> list[str]:
    # --pull never: nothing is fetched from a registry; --format docker keeps HEALTHCHECK.
    isolation = ["--isolation", "chroot", "--network", "host", "--pull=never"]
    return ["build", *isolation, "--format", "docker", "--layers"]


def build_image(podman: Podman, log: Path) -> None:
    """The project's image from the Dockerfile. Each named stage but the last is tagged too, so
    pruning old layers afterwards keeps the cache that makes the next build quick."""
    common = [*build_options(), *pip_mounts(), "-f", str(ROOT / "Dockerfile")]
    for stage in intermediate_stages((ROOT / "Dockerfile").read_text()):
        podman(
            *common, "--target", stage, "-t", f"localhost/newswatch-stage-{stage}:check", str(ROOT), log=log
        )
    podman(*common, "-t", IMAGE, str(ROOT), log=log)


def intermediate_stages(dockerfile: str) -> list[str]:
    stages = re.findall(r"^\s*FROM\s+\S+(?:\s+AS\s+(\S+))?\s*$", dockerfile, re.IGNORECASE | re.MULTILINE)
    return [name for name in stages[:-1] if name]


def sweep(podman: Podman, work: Path) -> None:
    """What a killed earlier run left: processes rooted in this storage (its scheduler, worker,
    build steps), containers, temp dirs. Called under the machine lock: none of it is in use."""
    for proc in Path("/proc").iterdir():
        with contextlib.suppress(OSError, ValueError):
            if proc.name.isdigit() and Path(os.readlink(proc / "root")).is_relative_to(STORE):
                os.kill(int(proc.name), signal.SIGKILL)
                print(
                    f"image-check: killed process {proc.name} left in {STORE} by an earlier run", flush=True
                )
    podman.quiet("rm", "--all", "--force")
    for stale in work.parent.glob(f"{WORK_PREFIX}*"):
        if stale != work:
            shutil.rmtree(stale, ignore_errors=True)


def prune(podman: Podman) -> None:
    """Drop layers no tagged image uses any more: each changed build leaves some behind (with vfs,
    each layer a full copy of the file system)."""
    podman.quiet("image", "prune", "--force")
