"""Download the Kafka and Cassandra jars from Maven Central, once.

``infra/pom.xml`` has one profile per server; ``mvn dependency:copy-dependencies``
copies each profile's runtime classpath into ``<jar_cache_dir>/<server>/``. A
marker file holding the pom's hash is written last, so an interrupted download
is redone and a pom change (version bump) triggers a fresh download.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import time
from pathlib import Path

from infra.settings import InfraSettings

POM = Path(__file__).with_name("pom.xml")
COMPONENTS = ("kafka", "cassandra")
MARKER = ".vista-complete"


class FetchError(RuntimeError):
    """Maven could not download the server jars."""


def pom_hash() -> str:
    return hashlib.sha256(POM.read_bytes()).hexdigest()[:16]


def jar_dir(settings: InfraSettings, component: str) -> Path:
    """Folder holding the classpath of ``component`` ("kafka" or "cassandra")."""
    if component not in COMPONENTS:
        raise ValueError(f"unknown component {component!r}; expected one of {COMPONENTS}")
    return settings.jar_cache_dir / component


def is_fetched(settings: InfraSettings, component: str) -> bool:
    marker = jar_dir(settings, component) / MARKER
    return marker.is_file() and marker.read_text().strip() == pom_hash()


def classpath(settings: InfraSettings, component: str) -> str:
    """Java ``-cp`` value for ``component`` (a wildcard over its jar folder)."""
    return str(jar_dir(settings, component) / "*")


def find_jar(settings: InfraSettings, component: str, prefix: str) -> Path:
    """The single jar of ``component`` whose file name starts with ``prefix`` (e.g. "jamm-")."""
    hits = sorted(jar_dir(settings, component).glob(f"{prefix}*.jar"))
    if not hits:
        raise FetchError(f"no {prefix}*.jar in {jar_dir(settings, component)}; run `vista infra fetch`")
    return hits[-1]


def fetch(settings: InfraSettings, component: str, *, force: bool = False) -> float:
    """Make sure ``component``'s jars are in the cache; returns seconds spent (0.0 if cached)."""
    target = jar_dir(settings, component)
    if not force and is_fetched(settings, component):
        return 0.0
    mvn = shutil.which(settings.mvn)
    if mvn is None:
        raise FetchError(f"Maven ({settings.mvn!r}) not found on PATH; install Maven 3.8+ or set VISTA_MVN")
    start = time.monotonic()
    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        mvn, "-q", "-B", "-f", str(POM), "-P", component,
        # One local repository per server: the two downloads may run concurrently.
        f"-Dmaven.repo.local={settings.jar_cache_dir / 'm2' / component}",
        "dependency:copy-dependencies", f"-DoutputDirectory={tmp}",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not any(tmp.glob("*.jar")):
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-30:])
        raise FetchError(f"downloading the {component} jars failed (exit {proc.returncode}): {' '.join(cmd)}\n{tail}")
    (tmp / MARKER).write_text(pom_hash() + "\n")
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return time.monotonic() - start


def fetch_all(settings: InfraSettings, *, force: bool = False) -> dict[str, float]:
    """Fetch every component (concurrently); returns seconds spent per component."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(len(COMPONENTS)) as pool:
        futures = {c: pool.submit(fetch, settings, c, force=force) for c in COMPONENTS}
        return {c: f.result() for c, f in futures.items()}
