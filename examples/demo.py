"""The demo: start the FastAPI example on the embedded broker, post sample deliveries the way
360dialog does, show what the callbacks printed and how fast each POST was answered, then stop.

    python examples/demo.py        (scripts/demo.sh sets up a virtualenv and runs this)
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import queue
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

META = {"display_phone_number": "15550001111", "phone_number_id": "100000000000001"}


def envelope(value: dict[str, Any], field: str = "messages") -> bytes:
    """A delivery as WhatsApp's Cloud API sends it (360dialog forwards it unchanged)."""
    value = {"messaging_product": "whatsapp", "metadata": META, **value} if field == "messages" else value
    body = {
        "object": "whatsapp_business_account",
        "entry": [{"id": "200000000000001", "changes": [{"value": value, "field": field}]}],
    }
    return json.dumps(body).encode()


def samples() -> list[tuple[str, bytes]]:
    contact = [{"profile": {"name": "Ana"}, "wa_id": "4915112345678"}]
    now = str(int(time.time()))

    def message(i: int, kind: str, **content: Any) -> dict[str, Any]:
        return {"from": "4915112345678", "id": f"wamid.DEMO{i}", "timestamp": now, "type": kind, **content}

    def status(i: int, value: str, **extra: Any) -> dict[str, Any]:
        return {"id": "wamid.OUT1", "status": value, "timestamp": now, "recipient_id": "4915112345678", **extra}

    return [
        ("text message", envelope({"contacts": contact, "messages": [message(1, "text", text={"body": "Hi! Where is my order?"})]})),
        ("image message", envelope({"contacts": contact, "messages": [message(2, "image", image={"id": "MEDIA1", "mime_type": "image/jpeg"})]})),
        ("status sent", envelope({"statuses": [status(1, "sent")]})),
        ("status delivered", envelope({"statuses": [status(2, "delivered")]})),
        ("status read", envelope({"statuses": [status(3, "read")]})),
        ("status failed", envelope({"statuses": [status(4, "failed", errors=[{"code": 131047, "title": "Re-engagement message", "message": "Re-engagement message", "error_data": {"details": "More than 24 hours have passed since the customer last replied"}}])]})),
        ("value error", envelope({"errors": [{"code": 130429, "title": "Rate limit hit", "message": "Rate limit hit", "error_data": {"details": "Too many messages"}}]})),
        ("a message type from the future", envelope({"contacts": contact, "messages": [message(3, "hologram", hologram={"frames": 24})]})),
    ]  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> int:
    from wa_middleware.web.embedded import stop_server

    data_dir = tempfile.mkdtemp(prefix="wa-demo-")
    port = free_port()
    env = {**os.environ, "PORT": str(port), "WA_DATA_DIR": data_dir, "PYTHONUNBUFFERED": "1"}
    env.pop("WA_BROKER_URL", None)
    print(f"starting examples/fastapi_app.py on http://127.0.0.1:{port} (embedded Valkey, data in {data_dir})")
    app = subprocess.Popen(
        [sys.executable, str(ROOT / "examples" / "fastapi_app.py")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line.rstrip()) for line in app.stdout or ()], daemon=True).start()
    try:
        deadline = time.monotonic() + 30
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if app.poll() is not None or time.monotonic() > deadline:
                print("the example app did not start:")
                while not lines.empty():
                    print("  " + lines.get())
                return 1
            time.sleep(0.1)

        auth = "Basic " + base64.b64encode(b"testuser:testpass").decode()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

        def post(body: bytes, authorization: str) -> tuple[int, float]:
            started = time.perf_counter()
            conn.request("POST", "/webhook", body, {"Authorization": authorization, "Content-Type": "application/json"})
            response = conn.getresponse()
            response.read()
            return response.status, (time.perf_counter() - started) * 1000

        # Warm-up: the first delivery starts the embedded server and the in-process workers.
        post(envelope({"statuses": []}), auth)
        print("\nPOST /webhook                              status  latency")
        latencies = []
        for name, body in samples():
            status, ms = post(body, auth)
            latencies.append(ms)
            print(f"  {name:40} {status}   {ms:6.2f} ms")
        status, ms = post(samples()[0][1], "Basic " + base64.b64encode(b"testuser:wrong").decode())
        print(f"  {'wrong password':40} {status}   {ms:6.2f} ms")
        status, ms = post(b"not json", auth)
        print(f"  {'not JSON':40} {status}   {ms:6.2f} ms")
        conn.request("GET", "/orders/42")
        other = conn.getresponse()
        print(f"  (the app's own route GET /orders/42 still answers {other.status}: {other.read().decode()})")
        latencies.sort()
        print(
            f"\nmedian {latencies[len(latencies) // 2]:.2f} ms, max {latencies[-1]:.2f} ms for {len(latencies)} deliveries"
        )

        print("\ncallbacks, run by the in-process workers after the 200 was sent:")
        expected = 9  # one line per callback run the samples trigger
        seen = 0
        deadline = time.monotonic() + 20
        while seen < expected and time.monotonic() < deadline:
            try:
                line = lines.get(timeout=0.5)
            except queue.Empty:
                continue
            if line.startswith("[callback]"):
                seen += 1
                print("  " + line)
        if seen < expected:
            print(f"only {seen} of {expected} callback runs were seen")
            return 1
        print("\ndone: every delivery was answered 200 before its callbacks ran.")
        return 0
    finally:
        app.terminate()
        try:
            app.wait(10)
        except subprocess.TimeoutExpired:
            app.kill()
        stop_server(data_dir)
        remove_data(Path(data_dir))


def remove_data(data_dir: Path) -> None:
    """The demo's data is of no use once it ends: remove its folder once the server has let go of it
    (it deletes its pid file on the way out)."""
    deadline = time.monotonic() + 5
    while (data_dir / "server.pid").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
