#!/usr/bin/env python3
"""bench/nfqdelay.py — hold every packet of an NFQUEUE queue for a fixed time, then accept it.

A stand-in for `tc netem delay` on kernels without netem (see bench/homecluster.sh). Run it in
the network namespace whose queue it serves, next to an iptables rule such as

    iptables -t mangle -A PREROUTING -i eth0 -j NFQUEUE --queue-num 0

It binds the queue (metadata only: no packet bytes are copied to user space), stamps each packet
when it arrives, and accepts it `delay` ms later. Packets leave the queue in arrival order and
every packet waits the same time, so one batch verdict ("accept every id up to N") releases all
the packets that are due: a netlink message lost to a full socket buffer only delays its packet
until the next batch, it never strands it.

Only the standard library (socket.AF_NETLINK, NETLINK_NETFILTER = 12). Exits on SIGTERM/SIGINT,
accepting what it still holds; if it dies anyway, the kernel drops the queued packets and the
namespace's traffic stops (no silent loss of the delay).

    usage: nfqdelay.py DELAY_MS [QUEUE_NUM]
"""

import os
import select
import signal
import socket
import struct
import sys
import time
from collections import deque

NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET, NFQNL_MSG_CONFIG, NFQNL_MSG_VERDICT_BATCH = 0, 2, 3
NFQA_PACKET_HDR = 1
NFQA_VERDICT_HDR = 2
NFQA_CFG_CMD, NFQA_CFG_PARAMS, NFQA_CFG_QUEUE_MAXLEN, NFQA_CFG_MASK, NFQA_CFG_FLAGS = 1, 2, 3, 4, 5
NFQA_CFG_F_GSO = 4  # queue GSO packets whole: a 64 KiB TCP burst is one verdict, not 45
NFQNL_CFG_CMD_BIND, NFQNL_CFG_CMD_UNBIND = 1, 2
NFQNL_COPY_META = 1
NF_ACCEPT = 1
NLM_F_REQUEST, NLM_F_ACK = 1, 4
NLMSG_ERROR = 2
NLMSG_HDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid (host order)
NFGEN_HDR = struct.Struct("!BBH")  # family, version, res_id (network order)
QUEUE_MAXLEN = 16384


def attr(kind: int, payload: bytes) -> bytes:
    n = 4 + len(payload)
    return struct.pack("=HH", n, kind) + payload + b"\0" * (-n % 4)


class Queue:
    def __init__(self, num: int):
        self.num = num
        self.seq = 0
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        for opt in (33, socket.SO_RCVBUF):  # SO_RCVBUFFORCE (root), else the capped one
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, opt, 16 << 20)
                break
            except OSError:
                pass
        self.sock.bind((0, 0))

    def send(self, msg: int, attrs: bytes, ack: bool = False) -> None:
        self.seq += 1
        body = NFGEN_HDR.pack(socket.AF_UNSPEC, 0, self.num) + attrs
        flags = NLM_F_REQUEST | (NLM_F_ACK if ack else 0)
        hdr = NLMSG_HDR.pack(NLMSG_HDR.size + len(body), (NFNL_SUBSYS_QUEUE << 8) | msg, flags, self.seq, 0)
        self.sock.send(hdr + body)
        if ack:
            self.wait_ack()

    def wait_ack(self) -> None:
        while True:
            for kind, payload in self.messages(self.sock.recv(65536)):
                if kind == NLMSG_ERROR:
                    (err,) = struct.unpack_from("=i", payload)
                    if err:
                        raise OSError(-err, f"nfqueue {self.num}: {os.strerror(-err)}")
                    return

    def config(self, cmd: int) -> None:
        self.send(NFQNL_MSG_CONFIG, attr(NFQA_CFG_CMD, struct.pack("!BxH", cmd, socket.AF_INET)), ack=True)

    def bind(self) -> None:
        self.config(NFQNL_CFG_CMD_BIND)
        params = attr(NFQA_CFG_PARAMS, struct.pack("!IB", 0, NFQNL_COPY_META))
        params += attr(NFQA_CFG_QUEUE_MAXLEN, struct.pack("!I", QUEUE_MAXLEN))
        gso = struct.pack("!I", NFQA_CFG_F_GSO)
        self.send(NFQNL_MSG_CONFIG, params + attr(NFQA_CFG_FLAGS, gso) + attr(NFQA_CFG_MASK, gso), ack=True)

    def accept_through(self, packet_id: int) -> None:
        self.send(NFQNL_MSG_VERDICT_BATCH, attr(NFQA_VERDICT_HDR, struct.pack("!II", NF_ACCEPT, packet_id)))

    @staticmethod
    def messages(buf: bytes):
        """(type, payload after the netlink header) for each message in a recv buffer."""
        at = 0
        while at + NLMSG_HDR.size <= len(buf):
            n, kind, _, _, _ = NLMSG_HDR.unpack_from(buf, at)
            if n < NLMSG_HDR.size:
                break
            yield kind, buf[at + NLMSG_HDR.size : at + n]
            at += (n + 3) & ~3

    @staticmethod
    def packet_id(payload: bytes):
        at = NFGEN_HDR.size
        while at + 4 <= len(payload):
            n, kind = struct.unpack_from("=HH", payload, at)
            if n < 4:
                return None
            if kind & 0x3FFF == NFQA_PACKET_HDR:
                return struct.unpack_from("!I", payload, at + 4)[0]
            at += (n + 3) & ~3
        return None


def main() -> int:
    if len(sys.argv) not in (2, 3):
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    delay = float(sys.argv[1]) / 1000.0
    q = Queue(int(sys.argv[2]) if len(sys.argv) == 3 else 0)
    q.bind()
    held = deque()  # (due time, packet id), in arrival order
    stop = []
    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, lambda *_: stop.append(1))
    print(f"nfqdelay: queue {q.num}, {delay * 1000:g} ms", file=sys.stderr, flush=True)
    packet = (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET
    while not stop:
        now = time.monotonic()
        last = None
        while held and held[0][0] <= now:
            last = held.popleft()[1]
        if last is not None:
            q.accept_through(last)
        timeout = max(0.0, held[0][0] - now) if held else 1.0
        try:
            ready, _, _ = select.select([q.sock], [], [], timeout)
        except InterruptedError:
            continue
        if not ready:
            continue
        try:
            buf = q.sock.recv(1 << 20)
        except OSError as e:  # ENOBUFS: messages lost, their packets go with the next batch
            if e.errno == 105:
                continue
            raise
        stamp = time.monotonic() + delay
        for kind, payload in q.messages(buf):
            if kind == packet:
                pid = q.packet_id(payload)
                if pid is not None:
                    held.append((stamp, pid))
    if held:
        q.accept_through(held[-1][1])
    try:
        q.config(NFQNL_CFG_CMD_UNBIND)
    except OSError:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
