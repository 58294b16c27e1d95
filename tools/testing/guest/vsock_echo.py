#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0
"""A minimal AF_VSOCK peer written with Python's socket module, for the `clients` suite.

    vsock_echo.py server PORT TEXT OUTFILE
    vsock_echo.py client CID PORT TEXT OUTFILE

Each side sends TEXT plus a newline, shuts down its write half, reads until EOF and writes what it
received to OUTFILE.  The client retries the connection for a few seconds, since the server may
not be listening yet.  Every blocking call has a timeout.
"""

import socket
import sys
import time

TIMEOUT = 20


def exchange(sock, text, outfile):
    sock.settimeout(TIMEOUT)
    sock.sendall(text.encode() + b"\n")
    sock.shutdown(socket.SHUT_WR)
    data = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    with open(outfile, "wb") as f:
        f.write(data)


def server(port, text, outfile):
    with socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM) as lsock:
        lsock.settimeout(TIMEOUT)
        lsock.bind((socket.VMADDR_CID_ANY, port))
        lsock.listen(1)
        print("server: listening on port %d" % port, flush=True)
        conn, peer = lsock.accept()
        with conn:
            print("server: connection from cid %d port %d" % peer, flush=True)
            exchange(conn, text, outfile)


def client(cid, port, text, outfile):
    deadline = time.monotonic() + 10
    while True:
        sock = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
        try:
            sock.settimeout(TIMEOUT)
            sock.connect((cid, port))
            break
        except (ConnectionResetError, ConnectionRefusedError):
            sock.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    with sock:
        print("client: connected from cid %d port %d" % sock.getsockname(), flush=True)
        exchange(sock, text, outfile)


def main(argv):
    if len(argv) == 5 and argv[1] == "server":
        server(int(argv[2]), argv[3], argv[4])
    elif len(argv) == 6 and argv[1] == "client":
        client(int(argv[2]), int(argv[3]), argv[4], argv[5])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
