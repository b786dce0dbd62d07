"""Privacy: a real batch (PDF text layer, RapidOCR on a scan, a tiny model) makes no network
request. The run is traced with strace, which sees the system calls of native code too
(onnxruntime's telemetry uploader is C++, invisible to Python's audit hooks)."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from conftest import write_invoice_pdf, write_scan
from docvqa_cli import privacy

pytestmark = pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace to watch system calls")

# connect()/sendto()/sendmsg() with an internet address; ports and addresses parsed below.
_CALL = re.compile(r"\b(connect|sendto|sendmsg)\(\d+, .*?sa_family=AF_INET6?, sin6?_port=htons\((\d+)\), "
                   r"(?:inet_pton\(AF_INET6, \"([^\"]+)\"|sin_addr=inet_addr\(\"([^\"]+)\"\))")


def network_attempts(trace: str) -> list[str]:
    """Lines of an strace log that reach for the network: any DNS query (port 53, even to a
    local resolver) and any connection or datagram to an address that is not loopback."""
    found = []
    for line in trace.splitlines():
        m = _CALL.search(line)
        if not m:
            continue
        port, addr = int(m.group(2)), m.group(3) or m.group(4)
        loopback = addr.startswith("127.") or addr in ("::1", "::ffff:127.0.0.1")
        if port == 53 or not loopback:
            found.append(line.strip())
    return found


def traced(cmd, env, tmp_path) -> tuple[subprocess.CompletedProcess, str]:
    log = tmp_path / "strace.log"
    probe = subprocess.run(["strace", "-f", "-qq", "-o", str(log), "-e", "trace=connect,sendto,sendmsg", "true"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"strace cannot trace here: {probe.stderr.strip()[:200]}")
    done = subprocess.run(["strace", "-f", "-qq", "-o", str(log), "-e", "trace=connect,sendto,sendmsg", *cmd],
                          env=env, capture_output=True, text=True, timeout=600)
    return done, log.read_text(errors="replace")


def unprotected(env: dict) -> dict:
    """The environment as a user's shell may have it: telemetry switched on where it can be."""
    env = dict(env)
    for key in privacy.ENVIRONMENT:
        env.pop(key, None)
    env["ORT_DISABLE_TELEMETRY"] = "0"
    env["RAY_USAGE_STATS_ENABLED"] = "1"
    return env


def test_the_detector_sees_onnxruntime_telemetry_without_docq(tmp_path, docq_env, python):
    """The control: RapidOCR alone (onnxruntime's default) looks up Microsoft's collector."""
    pytest.importorskip("rapidocr")
    scan = write_scan(tmp_path / "scan.png")
    code = ("import numpy, time; from PIL import Image; from rapidocr import RapidOCR; "
            f"RapidOCR()(numpy.array(Image.open({str(scan)!r}).convert('RGB'))); time.sleep(3)")
    done, trace = traced([python, "-c", code], unprotected(docq_env), tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    if not network_attempts(trace):
        pytest.skip("this onnxruntime build sends no telemetry: the control has nothing to see")
    assert network_attempts(trace)


def test_a_batch_with_ocr_and_a_model_makes_no_network_request(tmp_path, docq_env, python):
    pytest.importorskip("rapidocr")
    from _tiny_models import build_idefics3

    model = build_idefics3(tmp_path / "tiny-idefics3")
    docs = tmp_path / "docs"
    docs.mkdir()
    write_invoice_pdf(docs / "invoice.pdf")
    write_scan(docs / "scan.png")  # no text layer: RapidOCR (onnxruntime) reads it
    qfile = tmp_path / "q.txt"
    qfile.write_text("What is the total amount?\n")
    out = tmp_path / "out.jsonl"
    cmd = [python, "-m", "docvqa_cli", "batch", str(qfile), str(docs), "-o", str(out), "--model", str(model),
           "--device", "cpu", "--max-new-tokens", "2", "--jobs", "1", "--ocr", "rapidocr"]
    done, trace = traced(cmd, unprotected(docq_env), tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = out.read_text().splitlines()
    assert len(lines) == 2 and '"error": null' in lines[0] and '"error": null' in lines[1]
    assert network_attempts(trace) == []
