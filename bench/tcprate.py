#!/usr/bin/env python3
"""bench/tcprate.py — TCP throughput between two emulated devices (bench/homecluster.sh links).

    tcprate.py serve ADDR PORT        accept one connection, count its bytes, print Mbit/s
    tcprate.py send ADDR PORT MIB     send MIB MiB as fast as the link allows

The receiver times from the first byte to the last (connection setup excluded) and prints
`tcp: N MiB in S s = R Mbit/s`.
"""

import socket
import sys
import time


def serve(addr: str, port: int) -> None:
    with socket.create_server((addr, port)) as srv:
        conn, _ = srv.accept()
        with conn:
            got, start = 0, None
            while chunk := conn.recv(1 << 20):
                if start is None:
                    start = time.monotonic()
                got += len(chunk)
            secs = time.monotonic() - (start or time.monotonic())
    rate = got * 8 / secs / 1e6 if secs > 0 else 0.0
    print(f"tcp: {got >> 20} MiB in {secs:.2f} s = {rate:.0f} Mbit/s", flush=True)


def send(addr: str, port: int, mib: int) -> None:
    block = b"\0" * (1 << 20)
    for _ in range(50):  # the server may still be starting
        try:
            conn = socket.create_connection((addr, port), timeout=5)
            break
        except OSError:
            time.sleep(0.1)
    else:
        sys.exit(f"tcprate: cannot connect to {addr}:{port}")
    with conn:
        for _ in range(mib):
            conn.sendall(block)


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "serve":
        serve(sys.argv[2], int(sys.argv[3]))
    elif len(sys.argv) == 5 and sys.argv[1] == "send":
        send(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        sys.exit("usage:\n" + "\n".join(__doc__.strip().splitlines()[2:4]))
