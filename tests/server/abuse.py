"""`slimkv serve` under hostile clients (issue 12, findings 1-5), over raw sockets on loopback.

Each check is bounded in time (seconds) and in what it sends (a few MiB); the server's memory
is read from /proc. Every check fails against the server of bb8f74c (cpp-httplib 0.11):
  bodies past --max-body in chunked framing, and bodies without a length, are not read;
  a refused request's body is not read (404/401 answered from the header alone);
  a header of 200,000 fields or of 150 fields is 431, and costs no memory;
  slow-loris connections are closed at the header deadline, more than the per-client cap are
    refused at once, and /health stays fast meanwhile;
  conflicting Content-Length / Transfer-Encoding is 400; pipelined requests are all answered,
    in order; wrong JSON types are 400s without exception text;
  SIGTERM closes idle and slow connections at once, and cancels a stream --drain-timeout later.
Run by server/abuse_test.sh under ctest; prints one line per check and 'N passed, N failed'.
"""
import json
import select
import time

from serve_util import (Checks, Server, metrics, post_bytes, raw_connect, raw_request, read_response, request,
                        rss_bytes)

AUTH = b"Authorization: Bearer sekret\r\n"
MiB = 1 << 20


def send_until_answered(sock, chunks):
    """Sends the byte strings of `chunks` until the server has something to say; True if it
    answered (or closed) before everything was sent."""
    for piece in chunks:
        if select.select([sock], [], [], 0)[0]:
            return True
        try:
            sock.sendall(piece)
        except (BrokenPipeError, ConnectionResetError):
            return True
    return bool(select.select([sock], [], [], 2)[0])


def main():
    checks = Checks()
    with Server("-c", "256", "--kv-mem", "32", "--max-body", "1", "--api-key", "sekret", "--header-timeout", "2",
                "--idle-timeout", "2", "--body-timeout", "3", "--max-connections-per-client", "16") as srv:
        port = srv.port

        def chunked_body_past_max_body():
            rss0 = rss_bytes(srv.proc.pid)
            s = raw_connect(port)
            s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n" + AUTH +
                      b"Transfer-Encoding: chunked\r\n\r\n")
            words = b"a " * 32768
            body = [b'{"max_tokens": 1, "prompt": "'] + [words] * 48 + [b'"}']  # 3 MiB of valid JSON
            chunks = [b"%x\r\n%s\r\n" % (len(p), p) for p in body] + [b"0\r\n\r\n"]
            send_until_answered(s, chunks)
            r = read_response(s, 10)
            s.close()
            assert r is not None and r[0] == 413, r
            assert b"max-body" in r[2], r[2]
            assert rss_bytes(srv.proc.pid) - rss0 < 8 * MiB, "the body was buffered"
            assert request(srv.url + "/health")[0] == 200

        def body_without_length_is_not_read():
            s = raw_connect(port)
            s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n" + AUTH +
                      b"\r\n")
            t0 = time.time()
            sent = send_until_answered(s, [b"x" * 65536] * 16)
            r = read_response(s, 5)
            s.close()
            # No Content-Length and no chunked: no body (RFC 9112 6.3), answered at once.
            assert r is not None and r[0] == 400, r
            assert sent or time.time() - t0 < 5, "the server waited for the end of the connection"

        def refused_body_is_not_read():
            for path, headers, status in [("/upload", b"", 404), ("/v1/completions", b"", 401),
                                          ("/health", b"", 405)]:
                s = raw_connect(port, timeout=4)
                # 900 KB announced, below --max-body, none of it sent: the answer comes from the header.
                s.sendall(b"POST " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
                          b"\r\nContent-Length: 900000\r\n" + headers + b"\r\n")
                r = read_response(s, 4)
                s.close()
                assert r is not None and r[0] == status, (path, r)
                assert r[1].get("connection", "").lower() == "close", (path, r[1])

        def header_flood():
            rss0 = rss_bytes(srv.proc.pid)
            s = raw_connect(port)
            s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            batch = b"".join(b"X-Field-%d: value\r\n" % i for i in range(1000))
            answered = send_until_answered(s, [batch] * 200 + [b"\r\n"])  # 200,000 fields
            r = read_response(s, 5)
            s.close()
            assert answered and r is not None and r[0] == 431, r
            assert rss_bytes(srv.proc.pid) - rss0 < 8 * MiB

        def many_small_fields():
            fields = b"".join(b"X-%d: v\r\n" % i for i in range(150))
            r = raw_request(port, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n" + fields + b"\r\n")
            assert r is not None and r[0] == 431, r
            assert b"at most 100" in r[2], r[2]

        def slow_loris():
            refused0 = metrics(srv.url)["slimkv_http_connections_refused_total"]
            slow = []
            for _ in range(40):  # from another client address than the health checks
                s = raw_connect(port, source="127.0.0.2")
                try:
                    s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
                except OSError:
                    pass  # refused at once (over the per-client cap)
                slow.append(s)
            t0 = time.time()
            latencies, closed = [], set()
            while time.time() - t0 < 4:
                for i, s in enumerate(slow):
                    if i in closed:
                        continue
                    try:
                        if select.select([s], [], [], 0)[0]:
                            s.recv(4096)
                            closed.add(i)  # answered (503) or closed by the server
                        else:
                            s.send(b"x")
                    except OSError:
                        closed.add(i)
                h0 = time.time()
                assert request(srv.url + "/health", timeout=5)[0] == 200
                latencies.append(time.time() - h0)
                time.sleep(0.1)
            for s in slow:
                s.close()
            refused = metrics(srv.url)["slimkv_http_connections_refused_total"] - refused0
            assert refused >= 40 - 16, f"only {refused} connections over the per-client cap of 16 were refused"
            assert len(closed) == 40, f"{40 - len(closed)} slow connections still open after 4 s (deadline 2 s)"
            assert max(latencies) < 0.5, f"/health took {max(latencies):.2f} s"

        def conflicting_framing():
            body = b'{"prompt": "hi", "max_tokens": 1}'
            for extra in [b"Content-Length: %d\r\n" % (len(body) + 1),
                          b"Transfer-Encoding: chunked\r\n",
                          b"Transfer-Encoding: gzip\r\n"]:
                r = raw_request(port, post_bytes("/v1/completions", body, AUTH + extra))
                assert r is not None and r[0] == 400, (extra, r)
            double_te = (b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n" +
                         AUTH + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
            r = raw_request(port, double_te)
            assert r is not None and r[0] == 400, r

        def pipelined_in_order():
            reqs = b"".join(b"GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Request-Id: r%d\r\n%s\r\n" % (path, i, AUTH)
                            for i, path in enumerate([b"/health", b"/v1/models", b"/nothing", b"/health"]))
            s = raw_connect(port)
            s.sendall(reqs)
            got = [read_response(s, 5) for _ in range(4)]
            s.close()
            assert [r[0] for r in got] == [200, 200, 404, 200], [r and r[0] for r in got]
            assert [r[1]["x-request-id"] for r in got] == ["r0", "r1", "r2", "r3"], got

        def wrong_types_are_400():
            for body in [{"messages": [{"role": "user", "content": [{"type": 5}]}]},
                         {"messages": [{"role": "user", "content": "x"}], "response_format": {"type": 5}}]:
                st, _, raw = request(srv.url + "/v1/chat/completions", "POST", body,
                                     headers={"Authorization": "Bearer sekret"})
                assert st == 400, (st, raw)
                msg = json.loads(raw)["error"]["message"]
                # a message of our own, not the JSON library's exception text ("[json.exception.type_error.302] ...")
                assert "json.exception" not in msg and "type_error" not in msg, msg

        for name, fn in [("chunked body past --max-body", chunked_body_past_max_body),
                         ("body without a length", body_without_length_is_not_read),
                         ("refused body not read", refused_body_is_not_read), ("header flood", header_flood),
                         ("150 header fields", many_small_fields), ("slow-loris", slow_loris),
                         ("conflicting framing", conflicting_framing), ("pipelined in order", pipelined_in_order),
                         ("wrong JSON types", wrong_types_are_400)]:
            checks.run(name, fn)

        def alive():
            assert request(srv.url + "/health")[0] == 200

        checks.run("alive", alive)

    # SIGTERM with idle and slow connections open: they close at once, the process exits.
    with Server("-c", "256", "--kv-mem", "32", "--drain-timeout", "5", "--header-timeout", "60",
                "--idle-timeout", "60") as srv:

        def sigterm_with_slow_connections():
            slow = []
            for _ in range(3):
                s = raw_connect(srv.port)
                s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                slow.append(s)
            idle = raw_connect(srv.port)
            idle.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert read_response(idle)[0] == 200  # kept alive, now idle
            time.sleep(0.3)
            t0 = time.time()
            rc = srv.terminate(timeout=10)
            took = time.time() - t0
            for s in slow + [idle]:
                s.close()
            assert rc == 0, rc
            assert took < 3, f"exit took {took:.1f} s"

        checks.run("SIGTERM closes slow connections", sigterm_with_slow_connections)

    # SIGTERM with a long stream in flight: --drain-timeout later it is cancelled, its client
    # is told so, and the process exits.
    with Server("-c", "2048", "--kv-mem", "64", "--drain-timeout", "1") as srv:

        def sigterm_honours_drain_timeout():
            s = raw_connect(srv.port, timeout=20)
            s.sendall(post_bytes("/v1/completions", json.dumps(
                {"prompt": "Count:", "max_tokens": 1900, "ignore_eos": True, "stream": True}).encode()))
            got = b""
            while got.count(b"data: ") < 3:
                got += s.recv(4096)
            t0 = time.time()
            rc = srv.terminate(timeout=15)
            took = time.time() - t0
            try:
                while True:
                    data = s.recv(65536)
                    if not data:
                        break
                    got += data
            except OSError:
                pass
            s.close()
            assert rc == 0, rc
            assert took < 4, f"exit took {took:.1f} s with --drain-timeout 1"
            assert b"shutting_down" in got, got[-300:]

        checks.run("SIGTERM honours --drain-timeout", sigterm_honours_drain_timeout)
    checks.finish()


if __name__ == "__main__":
    main()
