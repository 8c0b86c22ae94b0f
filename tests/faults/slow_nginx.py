"""nginx for the slow-client tests: found or installed (Debian's package), and run on the site
configuration that docs/auth.md publishes, read from that page so the two cannot drift."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import Process, _env, free_port

DOCS = Path(__file__).resolve().parents[2] / "docs" / "auth.md"
#: What the published configuration names, replaced by the test's own ports.
DOCS_UPSTREAM = "server 127.0.0.1:8000;"
DOCS_LISTEN = "listen 80;"

#: The main configuration around the site's, laid out as Debian's nginx.conf (the site included in
#: the http block), with a keepalive_timeout at the http level as many nginx.conf files have (the
#: site's own must override it, not clash with it); everything else inside the test's directory.
MAIN = """\
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{
    worker_connections 4096;
}}
http {{
    access_log off;
    keepalive_timeout 65;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    include {dir}/wa-middleware.conf;
}}
"""


def site_config() -> str:
    """The ```nginx block of docs/auth.md's "WSGI behind nginx" section."""
    text = DOCS.read_text()
    section = text[text.index("## WSGI behind nginx") :]
    match = re.search(r"```nginx\n(.*?)```", section, re.S)
    assert match is not None, "docs/auth.md has no nginx block under 'WSGI behind nginx'"
    return match.group(1)


def find_or_install() -> str:
    """The nginx binary; installed with apt-get when missing (root only), else the test is skipped."""
    found = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None)
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip("nginx is not installed, and apt-get is not usable here (not root, or not Debian)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "nginx"]
    try:
        done = subprocess.run(install, env=env, capture_output=True, timeout=300)
        if done.returncode != 0:  # a stale package list: refresh it once
            subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=300)
            done = subprocess.run(install, env=env, capture_output=True, timeout=300)
    except subprocess.TimeoutExpired:
        pytest.skip("apt-get install nginx took more than 300 s")
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)
    if not found:
        pytest.skip(f"nginx could not be installed: {done.stderr.decode(errors='replace')[-500:]}")
    return found


def start(binary: str, directory: Path, upstream_port: int) -> Process:
    """nginx in the foreground (``daemon off``), as a child of the test, on a free high port."""
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    site = site_config()
    assert DOCS_UPSTREAM in site and DOCS_LISTEN in site
    site = site.replace(DOCS_UPSTREAM, f"server 127.0.0.1:{upstream_port};")
    site = site.replace(DOCS_LISTEN, f"listen 127.0.0.1:{port};")
    (directory / "wa-middleware.conf").write_text(site)
    conf = directory / "nginx.conf"
    conf.write_text(MAIN.format(dir=directory))
    args = [binary, "-p", str(directory), "-e", str(directory / "error.log"), "-c", str(conf)]
    checked = subprocess.run([*args, "-t"], capture_output=True, timeout=30)
    assert checked.returncode == 0, checked.stderr.decode(errors="replace")
    return Process([*args, "-g", "daemon off;"], _env(), directory / "nginx.log", port).start()
