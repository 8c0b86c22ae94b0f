"""The private pieces of dramatiq in ``wa_middleware/worker/_dramatiq.py`` keep their shape across the allowed range.

``tests/worker/dramatiq_contract_check.py`` checks them in a subprocess for the installed dramatiq and for
the lowest and highest release ``pyproject.toml`` allows, each installed with ``pip install --no-deps
--target`` and put first on ``PYTHONPATH`` (wa_middleware, redis and the rest still come from the venv).
Installing needs the package index: without one, or with ``WA_OFFLINE=1``, those two cases skip outside
CI (a release already in the pytest cache is used without the index).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import pytest

from tests.worker.dramatiq_contract_check import normalise, shape_hash

ROOT = Path(__file__).resolve().parents[2]
CHECK = Path(__file__).with_name("dramatiq_contract_check.py")

#: ``pyproject.toml``'s range for dramatiq, and the releases at its two ends. When the range moves, move
#: these, record the new ``__next__`` shape below if it changed, and update the copy in broker.py.
ALLOWED = {">=1.17", "<2.3"}
LOWEST, HIGHEST = "1.17.0", "2.2.1"

#: SHA-256 of `normalise`\ (``inspect.getsource(dramatiq.brokers.redis._RedisConsumer.__next__)``), the loop
#: ``_PlanningConsumer.__next__`` in wa_middleware/worker/broker.py is a copy of.
NEXT_SHAPES = {
    # dramatiq 1.17.0, 1.17.1, 1.18.0, 2.0.0, 2.0.1, 2.1.0, 2.2.0 and 2.2.1: the method's source is byte for
    # byte the same in all eight (the rest of redis.py was reformatted and annotated in 2.0.0, not it).
    "86e383737ca19900ec9bbdb4d4118ccfa21face3245985e32bcf4bf722f2ffd9": "1.17.0 to 2.2.1",
}

#: What pip prints when it cannot reach (or get anything from) the package index.
UNREACHABLE = re.compile(
    r"NewConnectionError|Failed to establish a new connection|Temporary failure in name resolution"
    r"|Name or service not known|Network is unreachable|Connection refused|ConnectTimeoutError|ReadTimeoutError"
    r"|Max retries exceeded|ProxyError|Could not fetch URL|\(from versions: none\)"
)


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI"):
        pytest.fail(f"{reason}: CI must check the lowest and highest allowed dramatiq")
    pytest.skip(reason)


def _complete(target: Path, version: str) -> bool:
    return (target / f"dramatiq-{version}.dist-info" / "RECORD").is_file() and (
        target / "dramatiq" / "brokers" / "redis.py"
    ).is_file()


@pytest.fixture(scope="session")
def dramatiq_release(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``dramatiq_release("1.17.0")``: a directory holding that release only, installed once per session.

    Kept in the pytest cache across sessions when the cache plugin is on, else in the session's tmp dir.
    """
    cache = getattr(request.config, "cache", None)
    root = cache.mkdir("wa-dramatiq-contract") if cache is not None else tmp_path_factory.mktemp("dramatiq")
    installed: dict[str, Path] = {}
    failed: list[str] = []  # the index was found unreachable once: do not wait for it again

    def release(version: str) -> Path:
        target = root / version
        if version in installed or _complete(target, version):
            installed[version] = target
            return target
        if failed:
            _unavailable(failed[0])
        if os.environ.get("WA_OFFLINE") == "1" and not os.environ.get("CI"):  # as tests/test_packaging.py
            _unavailable("WA_OFFLINE=1: no package index")
        if importlib.util.find_spec("pip") is None:
            _unavailable("pip is not installed in this venv")
        shutil.rmtree(target, ignore_errors=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=root))
        argv = [
            sys.executable, "-m", "pip", "install", "--no-deps", "--only-binary=:all:", "--no-input",
            "--disable-pip-version-check", "--timeout", "10", "--retries", "1",
            "--target", str(staging), f"dramatiq=={version}",
        ]  # fmt: skip
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=90, check=False)
        except subprocess.TimeoutExpired:
            shutil.rmtree(staging, ignore_errors=True)
            failed.append(f"pip install dramatiq=={version}: no answer from the package index in 90 s")
            _unavailable(failed[0])
        if done.returncode != 0:
            shutil.rmtree(staging, ignore_errors=True)
            output = f"{done.stdout}\n{done.stderr}"
            said = [line.strip() for line in output.splitlines() if UNREACHABLE.search(line)]
            if said:
                failed.append(f"pip install dramatiq=={version}: package index unreachable ({said[0][:300]})")
                _unavailable(failed[0])
            pytest.fail(f"pip install dramatiq=={version} failed:\n{output[-3000:]}")
        try:
            staging.rename(target)
        except OSError:  # another session got there first
            shutil.rmtree(staging, ignore_errors=True)
        assert _complete(target, version), f"no dramatiq {version} in {target}"
        installed[version] = target
        return target

    return release


def run_check(redis_url: str, namespace: str, release: Path | None, shapes: list[str]) -> tuple[int, dict[str, Any]]:
    env = dict(os.environ)
    if release is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(release), env.get("PYTHONPATH", "")) if p)
    argv = [sys.executable, str(CHECK), "--redis-url", redis_url, "--namespace", namespace]
    for shape in shapes:
        argv += ["--next-sha256", shape]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False, cwd=ROOT, env=env)
    lines = done.stdout.strip().splitlines()
    assert lines, f"the check printed nothing (exit {done.returncode}):\n{done.stderr[-3000:]}"
    try:
        report: dict[str, Any] = json.loads(lines[-1])
    except ValueError:
        pytest.fail(
            f"the check printed no report (exit {done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
        )
    return done.returncode, report


def test_checked_releases_are_the_ends_of_the_allowed_range() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    found = re.findall(r'^\s*"dramatiq\s*([<>=!~][^";]*)"', pyproject, flags=re.MULTILINE)
    assert len(found) == 1, f"no single dramatiq requirement in pyproject.toml: {found}"
    assert {s.strip() for s in found[0].split(",")} == ALLOWED, (
        f"pyproject.toml allows dramatiq{found[0]}, this test checks {sorted(ALLOWED)}: update LOWEST, HIGHEST "
        "and NEXT_SHAPES"
    )


@pytest.mark.parametrize("release", ["installed", LOWEST, HIGHEST])
def test_dramatiq_pieces_keep_their_shape(
    release: str, redis_url: str, namespace: str, dramatiq_release: Callable[[str], Path]
) -> None:
    if release == "installed":
        path, version = None, importlib.metadata.version("dramatiq")
    else:
        path, version = dramatiq_release(release), release
    code, report = run_check(redis_url, namespace, path, list(NEXT_SHAPES))
    assert report["dramatiq"] == version, f"the check imported dramatiq {report['dramatiq']} from {report['file']}"
    if path is not None:
        assert Path(report["file"]).is_relative_to(path), f"dramatiq imported from {report['file']}, not {path}"
    else:
        spec = importlib.util.find_spec("dramatiq")
        assert spec is not None and report["file"] == spec.origin, f"dramatiq imported from {report['file']}"
    failures = "\n".join(report["failures"])
    if "next_normalised" in report:
        failures += f"\n\nnormalised _RedisConsumer.__next__ of dramatiq {version}:\n{report['next_normalised']}"
    assert code == 0 and not report["failures"], f"dramatiq {version} ({report['file']}):\n{failures}"


def test_check_fails_on_an_unrecorded_next_shape(redis_url: str, namespace: str) -> None:
    """The check can fail: a recorded hash the installed ``__next__`` does not have is one failure, alone."""
    code, report = run_check(redis_url, namespace, None, ["0" * 64])
    assert code == 1
    assert len(report["failures"]) == 1 and "__next__" in report["failures"][0], report["failures"]
    assert report["next_sha256"] in NEXT_SHAPES
    assert report["next_normalised"].startswith("def __next__ ( self ) :\n")


ORIGINAL = """
    def __next__(self):
        try:
            # the fast path first
            data = self.message_cache.pop(0)
            return MessageProxy(Message.decode(data))
        except IndexError:
            self.misses, backoff_ms = compute_backoff(self.misses, max_backoff=self.timeout)
            return None
"""

REFORMATTED = '''
def __next__(self):
  """A docstring is not shape."""
  try:
    data = self.message_cache.pop(0)  # another comment

    return MessageProxy(
        Message.decode(data),
    )
  except IndexError:
    self.misses, backoff_ms = compute_backoff(
        self.misses, max_backoff=self.timeout
    )
    return None
'''


def test_normalise_ignores_layout_comments_and_docstrings() -> None:
    assert normalise(REFORMATTED) == normalise(ORIGINAL)
    assert shape_hash(REFORMATTED) == shape_hash(ORIGINAL)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("pop(0)", "pop()"),  # another argument
        ("max_backoff=self.timeout", "max_backoff=100"),  # another keyword value
        ("(self.misses, max", "(self.misses + 1, max"),  # an operator
        ("            return None\n", "        return None\n"),  # another nesting
    ],
    ids=["argument", "keyword-value", "operator", "nesting"],
)
def test_normalise_keeps_code_changes(old: str, new: str) -> None:
    changed = ORIGINAL.replace(old, new)
    assert changed != ORIGINAL
    assert shape_hash(changed) != shape_hash(ORIGINAL)
