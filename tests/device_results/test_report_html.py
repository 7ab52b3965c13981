"""The HTML report in a real headless Chromium, driven over the DevTools protocol.

Chromium is started with --remote-debugging-port=0; the test speaks the DevTools protocol over a
WebSocket (a minimal RFC 6455 client on the standard library, below), opens the report from disk,
and checks: every image decoded (naturalWidth > 0), no console errors, no exceptions, no log
errors, and no request for anything but the file itself and data: URIs. It saves a full-page
screenshot to ``test-artifacts/`` (``report.png``: the real run of ``test_report.py``;
``report-devices.png``: a stored multi-device run).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from device_results.report import ReportConfig, write_report
from device_results.store import ResultsStore
from tests.conftest import require_tool
from tests.device_results.test_report_warnings import make_synthetic_run

ARTIFACT_DIR = Path(__file__).resolve().parents[2] / "test-artifacts"


class WebSocket:
    """Just enough of a WebSocket client for the DevTools protocol: masked text frames out, any frames in."""

    def __init__(self, url: str, timeout_s: float = 30.0) -> None:
        m = re.match(r"ws://([^/:]+):(\d+)(/.*)", url)
        assert m, url
        self.sock = socket.create_connection((m[1], int(m[2])), timeout=timeout_s)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {m[3]} HTTP/1.1\r\nHost: {m[1]}:{m[2]}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
                           ).encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            assert chunk, "DevTools closed the connection during the handshake"
            head += chunk
        assert head.startswith(b"HTTP/1.1 101"), head[:200]
        self.buf = head.split(b"\r\n\r\n", 1)[1]

    def _read(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("DevTools closed the connection")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def send(self, text: str) -> None:
        payload = text.encode()
        header = bytes([0x81])
        n = len(payload)
        if n < 126:
            header += bytes([0x80 | n])
        elif n < 1 << 16:
            header += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            header += bytes([0x80 | 127]) + struct.pack(">Q", n)
        mask = os.urandom(4)
        self.sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def recv(self) -> str:
        message = b""
        while True:
            b0, b1 = self._read(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._read(8))[0]
            data = self._read(n)  # servers do not mask
            opcode = b0 & 0x0F
            if opcode == 0x8:
                raise ConnectionError("DevTools closed the WebSocket")
            if opcode in (0x9, 0xA):
                continue
            message += data
            if b0 & 0x80:
                return message.decode()

    def close(self) -> None:
        self.sock.close()


class DevTools:
    """One page target over the browser's WebSocket (flattened session)."""

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws
        self.next_id = 0
        self.events: list[dict] = []
        self.session: str | None = None

    def call(self, method: str, timeout_s: float = 30.0, **params) -> dict:
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params}
        if self.session:
            msg["sessionId"] = self.session
        self.ws.send(json.dumps(msg))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            reply = json.loads(self.ws.recv())
            if reply.get("id") == self.next_id:
                assert "error" not in reply, f"{method}: {reply['error']}"
                return reply.get("result", {})
            self.events.append(reply)
        raise TimeoutError(method)

    def wait_event(self, method: str, timeout_s: float = 30.0) -> dict:
        for e in self.events:
            if e.get("method") == method:
                return e
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            event = json.loads(self.ws.recv())
            self.events.append(event)
            if event.get("method") == method:
                return event
        raise TimeoutError(method)


def _start_chromium(chromium: str, profile: Path) -> tuple[subprocess.Popen, str]:
    argv = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-default-apps", "--disable-extensions", "--mute-audio", "--hide-scrollbars",
            f"--user-data-dir={profile}", "--remote-debugging-port=0", "about:blank"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    seen = []
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            if proc.poll() is not None:
                break
            continue
        seen.append(line)
        m = re.search(r"DevTools listening on (ws://\S+)", line)
        if m:
            # keep draining stderr so a chatty browser never blocks on a full pipe
            threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
            return proc, m[1]
    proc.kill()
    raise AssertionError("chromium did not start its DevTools endpoint:\n" + "".join(seen[-20:]))


def check_page_in_chromium(html: Path, screenshot: Path) -> dict:
    """Open ``html`` in headless Chromium, assert it loaded cleanly, save a full-page screenshot.

    Returns:
        ``{"images": [...], "headings": [...]}`` as the page reported them.
    """
    chromium = require_tool("chromium", "chromium-browser", "google-chrome")
    profile = Path(tempfile.mkdtemp(prefix="chromium-profile-"))
    proc, url = _start_chromium(chromium, profile)
    ws = WebSocket(url)
    try:
        dt = DevTools(ws)
        target = dt.call("Target.createTarget", url="about:blank")["targetId"]
        dt.session = dt.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            dt.call(f"{domain}.enable")
        dt.call("Emulation.setDeviceMetricsOverride", width=1280, height=900, deviceScaleFactor=1, mobile=False)
        dt.call("Page.navigate", url=html.resolve().as_uri())
        dt.wait_event("Page.loadEventFired", timeout_s=60)
        images = dt.call("Runtime.evaluate", returnByValue=True, expression=(
            "Array.from(document.images).map(i => ({ok: i.complete && i.naturalWidth > 0, w: i.naturalWidth, "
            "alt: i.alt, data: i.src.startsWith('data:image/png;base64,')}))"))["result"]["value"]
        headings = dt.call("Runtime.evaluate", returnByValue=True, expression=(
            "Array.from(document.querySelectorAll('h2')).map(h => h.textContent)"))["result"]["value"]
        height = dt.call("Runtime.evaluate", returnByValue=True,
                         expression="document.documentElement.scrollHeight")["result"]["value"]
        dt.call("Emulation.setDeviceMetricsOverride", width=1280, height=min(int(height), 16000),
                deviceScaleFactor=1, mobile=False)
        shot = dt.call("Page.captureScreenshot", format="png", timeout_s=60)["data"]
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        screenshot.write_bytes(base64.b64decode(shot))
    finally:
        ws.close()
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(profile, ignore_errors=True)

    assert len(images) == html.read_text().count("<img ") > 0
    assert all(i["ok"] and i["w"] > 0 and i["data"] for i in images), images
    console_errors = [e["params"] for e in dt.events if e.get("method") == "Runtime.consoleAPICalled"
                      and e["params"].get("type") in ("error", "assert")]
    exceptions = [e["params"] for e in dt.events if e.get("method") == "Runtime.exceptionThrown"]
    log_errors = [e["params"]["entry"] for e in dt.events if e.get("method") == "Log.entryAdded"
                  and e["params"]["entry"].get("level") == "error"]
    assert not console_errors and not exceptions and not log_errors, (console_errors, exceptions, log_errors)
    requests = [e["params"]["request"]["url"] for e in dt.events if e.get("method") == "Network.requestWillBeSent"]
    assert all(u.startswith(("file://", "data:")) for u in requests), requests
    assert any(h.startswith("1. What ran") for h in headings) and any("FP32 vs INT8" in h for h in headings)
    return {"images": images, "headings": headings}


def test_multi_device_report_loads_cleanly_in_chromium(tmp_path):
    """A host-cpu, a GPU, a phone and the virtual device: every kind of plot and warning on one page."""
    require_tool("chromium", "chromium-browser", "google-chrome")
    db = tmp_path / "results.db"
    with ResultsStore(db) as store:
        run_a = make_synthetic_run(store, label="lab-a", seed=0)
    files = write_report(db, [run_a], tmp_path / "report", ReportConfig(bootstrap_resamples=100))
    seen = check_page_in_chromium(files.html, ARTIFACT_DIR / "report-devices.png")
    assert len(seen["images"]) == len(files.png) >= 5
