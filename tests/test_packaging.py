"""The distribution: sdist and wheel build, the wheel installs in a clean venv and serves a FastAPI app.

Needs the package index (build backend, FastAPI, uvicorn); ``WA_OFFLINE=1`` skips it outside CI.
"""

from __future__ import annotations

import base64
import email
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import wa_middleware
from tests.ops_helpers import free_port, private_redis, wait_port

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [
    pytest.mark.packaging,
    pytest.mark.skipif(
        os.environ.get("WA_OFFLINE") == "1" and not os.environ.get("CI"), reason="WA_OFFLINE=1: no package index"
    ),
]

APP = """
import os
from fastapi import FastAPI
import wa_middleware
from wa_middleware import BasicAuth, Webhook
from wa_middleware.adapters.asgi import WebhookMiddleware

wa = Webhook(auth=BasicAuth("user", "pass"), broker_url=os.environ["TEST_BROKER"], queue_name="wa-ops-packaging")
app = FastAPI()
app.add_middleware(WebhookMiddleware, webhook=wa)

@app.get("/where")
def where():
    return {"file": wa_middleware.__file__, "version": wa_middleware.__version__}
"""


def run(argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=540, **kw)  # type: ignore[call-overload]
    assert done.returncode == 0, f"{argv}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """sdist, then the wheel built from that sdist (as ``python -m build`` does): proves the sdist is complete."""
    base = tmp_path_factory.mktemp("dist")
    source = base / "source"
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(
            ".git", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".wa_middleware", "benchmarks"
        ),
    )
    run([sys.executable, "-m", "build", "--outdir", str(base / "out"), str(source)])
    yield base / "out"


def test_wheel_and_sdist_contents(dist: Path) -> None:
    [wheel] = dist.glob("*.whl")
    [sdist] = dist.glob("*.tar.gz")
    assert wheel.name == f"wa_middleware-{wa_middleware.__version__}-py3-none-any.whl"
    assert sdist.name == f"wa_middleware-{wa_middleware.__version__}.tar.gz"
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        meta = email.message_from_bytes(zf.read(f"wa_middleware-{wa_middleware.__version__}.dist-info/METADATA"))
        entry_points = zf.read(f"wa_middleware-{wa_middleware.__version__}.dist-info/entry_points.txt").decode()
        top_level = zf.read(f"wa_middleware-{wa_middleware.__version__}.dist-info/top_level.txt").decode().split()
    assert "wa_middleware/py.typed" in names
    assert {
        "wa_middleware/adapters/__init__.py",
        "wa_middleware/adapters/asgi.py",
        "wa_middleware/adapters/wsgi.py",
    } <= set(names)
    assert not any(n.startswith("adapters/") for n in names)  # no top-level "adapters" package
    assert top_level == ["wa_middleware"]
    assert not any(n.startswith("tests/") for n in names)
    assert meta["Version"] == wa_middleware.__version__
    assert {"embedded", "metrics", "bench", "dev"} <= set(meta.get_all("Provides-Extra") or [])
    assert "Typing :: Typed" in (meta.get_all("Classifier") or [])
    assert re.search(r"^wa-middleware = wa_middleware\.cli:main$", entry_points, re.M)


def test_wheel_runs_fastapi_in_fresh_venv(dist: Path, tmp_path: Path) -> None:
    [wheel] = dist.glob("*.whl")
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)])
    py = venv / "bin" / "python"
    run([str(py), "-m", "pip", "install", "--quiet", str(wheel), "fastapi", "uvicorn"])
    # The installed package, not the source tree: run from an empty directory.
    work = tmp_path / "app"
    work.mkdir()
    (work / "pkgapp.py").write_text(textwrap.dedent(APP))
    done = run([str(py), "-c", "import importlib.util as u; print(u.find_spec('adapters'))"], cwd=work)
    assert done.stdout.strip() == "None"
    run([str(venv / "bin" / "wa-middleware"), "--help"], cwd=work)

    (tmp_path / "redis").mkdir()
    with private_redis(tmp_path / "redis") as broker:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        env["TEST_BROKER"] = broker
        proc = subprocess.Popen(
            [str(venv / "bin" / "uvicorn"), "pkgapp:app", "--port", str(port), "--log-level", "warning"],
            cwd=work,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            wait_port(port, 60)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/where", timeout=10) as answer:
                where = json.loads(answer.read())
            assert str(venv) in where["file"] and where["version"] == wa_middleware.__version__
            body = json.dumps({"object": "whatsapp_business_account", "entry": []}).encode()
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/webhook",
                data=body,
                method="POST",
                headers={
                    "Content-Type": "application/json",
                    "Authorization": "Basic " + base64.b64encode(b"user:pass").decode(),
                },
            )
            with urllib.request.urlopen(request, timeout=10) as answer:
                assert answer.status == 200
                assert json.loads(answer.read()) == {"status": "stored"}
        finally:
            proc.terminate()
            _, err = proc.communicate(timeout=20)
        # uvicorn re-raises the SIGTERM it handled once shut down: -15 is a clean exit too.
        assert proc.returncode in (0, -15), err.decode()[-2000:]
        assert b"Traceback" not in err, err.decode()[-2000:]
