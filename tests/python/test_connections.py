"""Clients that hold connections without talking do not stop others from
being served (#13): a slow-loris HTTP client is cut at --http-header-timeout,
a STOW body that stops arriving at --http-body-timeout (one that keeps
trickling is not), a thousand idle HTTP connections leave room for real
requests, and DICOM connections that never send an A-ASSOCIATE-RQ take no
association place."""

from __future__ import annotations

import resource
import socket
import time

from pynetdicom import AE
from pynetdicom.sop_class import Verification

from phim_helpers import Instance, assert_instance_bytes, encode_multipart, stow


def raise_fd_limit(n: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(n, hard), hard))


def host_port(server) -> tuple[str, int]:
    host, port = server.addr.rsplit(":", 1)
    return host, int(port)


def test_slow_loris_is_cut_at_the_header_timeout(phim_factory):
    server = phim_factory.start("embedded", extra_args=["--http-header-timeout", "2"])
    s = socket.create_connection(host_port(server))
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: phim\r\nX-Slow: ")
    started = time.monotonic()
    s.settimeout(15)
    got = b""
    while True:  # a 408 may come first; then the server closes
        chunk = s.recv(4096)
        if not chunk:
            break
        got += chunk
    took = time.monotonic() - started
    assert 1.5 <= took < 10, took
    assert got == b"" or got.startswith(b"HTTP/1.1 408"), got[:80]
    # A keep-alive connection that goes quiet after a request is closed too.
    k = socket.create_connection(host_port(server))
    k.sendall(b"GET /healthz HTTP/1.1\r\nHost: phim\r\n\r\n")
    k.settimeout(15)
    assert k.recv(4096).startswith(b"HTTP/1.1 200")
    started = time.monotonic()
    while k.recv(4096):
        pass
    assert time.monotonic() - started < 10
    assert server.get("/healthz").status_code == 200


def read_until_closed(s: socket.socket, timeout: float) -> bytes:
    s.settimeout(timeout)
    got = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            return got
        got += chunk


def stow_head(server, body: bytes, content_type: str) -> bytes:
    return (f"POST /dicomweb/studies HTTP/1.1\r\nHost: phim\r\nContent-Type: {content_type}\r\n"
            f"Accept: application/dicom+json\r\nContent-Length: {len(body)}\r\n\r\n").encode()


def test_a_stow_body_that_stops_is_cut_at_the_body_timeout(phim_factory):
    server = phim_factory.start("embedded", extra_args=["--http-body-timeout", "2"])
    first, stalled = Instance.make("body-timeout/first"), Instance.make("body-timeout/stalled")
    body, ct = encode_multipart([first.data, stalled.data])
    cut = body.index(stalled.data) + len(stalled.data) // 2
    s = socket.create_connection(host_port(server))
    s.sendall(stow_head(server, body, ct) + body[:cut])
    started = time.monotonic()
    # Meanwhile the server serves others.
    other = Instance.make("body-timeout/other")
    assert stow(server, [other.data]).status == 200
    got = read_until_closed(s, 15)  # the server answers and closes the connection
    took = time.monotonic() - started
    assert 1.5 <= took < 10, took
    head = got.split(b"\r\n\r\n", 1)[0].lower()
    assert head.startswith(b"http/1.1 408"), got[:200]
    assert b"connection: close" in head, head
    assert b"http-body-timeout" in got, got
    # The part that arrived whole was stored; the stalled one left nothing behind.
    assert_instance_bytes(server, first.study, first.series, first.sop, first.data)
    assert server.get(f"/dicomweb/studies/{stalled.study}/series/{stalled.series}/instances/"
                      f"{stalled.sop}").status_code == 404
    assert_instance_bytes(server, other.study, other.series, other.sop, other.data)

    # A body that keeps arriving, slower in all than the timeout, is not cut.
    slow = Instance.make("body-timeout/slow")
    body, ct = encode_multipart([slow.data])
    s = socket.create_connection(host_port(server))
    s.sendall(stow_head(server, body, ct))
    pieces = [body[i * len(body) // 5:(i + 1) * len(body) // 5] for i in range(5)]
    started = time.monotonic()
    for piece in pieces:
        s.sendall(piece)
        time.sleep(1.0)
    assert time.monotonic() - started > 4
    s.settimeout(15)
    answer = s.recv(65536)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    s.close()
    assert_instance_bytes(server, slow.study, slow.series, slow.sop, slow.data)


def test_a_thousand_idle_connections_leave_room(phim_factory):
    raise_fd_limit(4096)
    server = phim_factory.start("embedded")
    idle = []
    try:
        for i in range(1000):
            c = socket.create_connection(host_port(server))
            if i % 2:
                c.sendall(b"GET /healthz HTTP/1.1\r\n")  # half a request, then nothing
            idle.append(c)
        started = time.monotonic()
        for _ in range(20):
            assert server.get("/healthz", timeout=5).status_code == 200
        assert time.monotonic() - started < 5
        assert server.get("/dicomweb/studies", timeout=5).status_code == 200
    finally:
        for c in idle:
            c.close()


def test_silent_dicom_connections_take_no_association_place(phim_factory):
    # Two association places; 64 connections that send nothing.
    server = phim_factory.start("embedded", extra_args=["--dicom-max-associations", "2"])
    silent = [socket.create_connection(server.dicom_addr) for _ in range(64)]
    try:
        time.sleep(0.3)
        ae = AE(ae_title="TALKER")
        ae.add_requested_context(Verification)
        for _ in range(3):
            assoc = ae.associate(*server.dicom_addr, ae_title="PHIM")
            assert assoc.is_established
            assert assoc.send_c_echo().Status == 0
            assoc.release()
        # The places are still bounded for connections that do talk.
        held = [ae.associate(*server.dicom_addr, ae_title="PHIM") for _ in range(2)]
        assert all(a.is_established for a in held)
        third = ae.associate(*server.dicom_addr, ae_title="PHIM")
        assert third.is_rejected
        for a in held:
            a.release()
    finally:
        for c in silent:
            c.close()
