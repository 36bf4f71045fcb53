"""The web page in headless Chromium: a chat sent through `/?ask=` streams a reply into the DOM
(as text, never markup), the cluster view lists this device; screenshots of both are written to
OUT_DIR. Chromium is driven over its DevTools protocol on a pipe (--remote-debugging-pipe: file
descriptors 3 and 4, NUL-separated JSON), so no extra Python package is needed.
Usage: test_web.py PRIMA_BINARY MODEL.gguf OUT_DIR"""

import base64
import html
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

from test_api import Server


class Browser:
    def __init__(self):
        exe = shutil.which("chromium") or shutil.which("chromium-browser")
        self.profile = tempfile.mkdtemp(prefix="prima-chromium-")
        to_child_r, self.to_child = os.pipe()
        self.from_child, from_child_w = os.pipe()

        def fds():  # the child reads commands on fd 3 and writes answers on fd 4
            r, w = os.dup(to_child_r), os.dup(from_child_w)  # out of the way of 3 and 4 first
            os.dup2(r, 3)
            os.dup2(w, 4)

        self.proc = subprocess.Popen(
            [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--user-data-dir=" + self.profile,
             "--window-size=1100,800", "--remote-debugging-pipe", "about:blank"],
            preexec_fn=fds, close_fds=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_child_r)
        os.close(from_child_w)
        self.buf, self.next_id = b"", 0

    def call(self, method, session=None, **params):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        os.write(self.to_child, json.dumps(msg).encode() + b"\0")
        while True:
            while b"\0" not in self.buf:
                chunk = os.read(self.from_child, 1 << 16)
                if not chunk:
                    raise RuntimeError("chromium closed its DevTools pipe")
                self.buf += chunk
            raw, self.buf = self.buf.split(b"\0", 1)
            m = json.loads(raw)
            if m.get("id") == self.next_id:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m["result"]

    def open(self, url):
        target = self.call("Target.createTarget", url=url)["targetId"]
        return self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]

    def eval(self, session, expr):
        return self.call("Runtime.evaluate", session, expression=expr, returnByValue=True)["result"].get("value")

    def wait_for(self, session, expr, timeout=180):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.eval(session, expr):
                return
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {expr}")

    def screenshot(self, session, path):
        with open(path, "wb") as f:
            f.write(base64.b64decode(self.call("Page.captureScreenshot", session, format="png")["data"]))

    def close(self):
        self.proc.kill()
        self.proc.wait()
        shutil.rmtree(self.profile, ignore_errors=True)


def texts(dom, cls):
    """Text of the `.text` span in each chat bubble of class `cls`."""
    pat = r'<div class="msg ' + cls + r'[^"]*"><span class="who">[^<]*</span><span class="text">(.*?)</span></div>'
    return [html.unescape(t) for t in re.findall(pat, dom, re.S)]


def main():
    binary, model, out_dir = sys.argv[1:4]
    os.makedirs(out_dir, exist_ok=True)
    srv = Server(binary, model, key=False)
    b = Browser()
    try:
        question = "What is the capital of France? <b>bold</b>"
        chat = b.open(srv.base + "/?ask=" + re.sub(r"[^A-Za-z0-9]", lambda m: "%%%02X" % ord(m.group()), question))
        b.wait_for(chat, "document.getElementById('status').textContent.includes('generated tokens')")
        dom = b.eval(chat, "document.documentElement.outerHTML")
        users, replies = texts(dom, "user"), texts(dom, "assistant")
        assert users == [question], users  # shown as text
        assert "<b>bold</b>" not in dom, "user text was parsed as HTML"
        assert len(replies) == 1 and replies[0].strip(), replies
        assert 'class="msg assistant error"' not in dom, replies
        b.screenshot(chat, os.path.join(out_dir, "chat.png"))
        cluster = b.open(srv.base + "/#cluster")
        b.wait_for(cluster, "document.querySelectorAll('tr.device').length > 0")
        cells = b.eval(cluster, "[...document.querySelector('tr.device').cells].map(c => c.textContent)")
        n_rows = b.eval(cluster, "document.querySelectorAll('tr.device').length")
        assert n_rows == 1 and cells[1] == "0-29" and cells[2].endswith(" ms") and cells[6].endswith("%"), cells
        events = b.eval(cluster, "document.getElementById('events').textContent")
        assert "model loaded" in events, events
        b.screenshot(cluster, os.path.join(out_dir, "cluster.png"))
        print("reply in the page:", replies[0].strip()[:120].replace("\n", " "))
        print("device row:", cells)
        print("web page test passed; screenshots in", out_dir)
    finally:
        b.close()
        srv.stop()


if __name__ == "__main__":
    main()
