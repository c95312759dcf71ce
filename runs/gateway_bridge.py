"""A TCP-to-Unix-socket relay: how a sandboxed agent reaches its run's model gateway.

The sandbox has its own network namespace with nothing but loopback, so the gateway (which
listens on a Unix socket in the worker) is bind-mounted in as a socket file, and this relay
listens on 127.0.0.1:PORT inside the namespace and passes every connection through to it.

Run as a script inside the sandbox it binds first, then forks: the child relays, the parent
execs the command, so the port is open before the command starts and the relay dies with the
sandbox's pid namespace:

    python gateway_bridge.py SOCKET PORT -- /bin/sh -c COMMAND

The worker also imports it (`start`) for the `none` backend, where the "sandbox" is the host.
Standard library only, and no imports from the project: the sandbox mounts this one file.
"""

from __future__ import annotations

import os
import socket
import sys
import threading

_CHUNK = 65536


def listen(port: int) -> socket.socket:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", port))
    server.listen(64)
    return server


def serve(server: socket.socket, target: str) -> None:
    """Relay every connection accepted on `server` to the Unix socket `target`, until closed."""
    while True:
        try:
            client, _ = server.accept()
        except OSError:
            return  # the listener was closed
        threading.Thread(target=_relay, args=(client, target), daemon=True).start()


def start(target: str) -> socket.socket:
    """Listen on a free loopback port in a daemon thread; close the returned socket to stop."""
    server = listen(0)
    threading.Thread(
        target=serve, args=(server, target), daemon=True, name="gateway-bridge"
    ).start()
    return server


def _relay(client: socket.socket, target: str) -> None:
    upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        upstream.connect(target)
    except OSError:
        client.close()
        upstream.close()
        return
    for sock in (client, upstream):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    back = threading.Thread(target=_pump, args=(upstream, client), daemon=True)
    back.start()
    _pump(client, upstream)
    back.join()
    client.close()
    upstream.close()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(_CHUNK):
            sink.sendall(data)
    except OSError:
        pass
    try:
        sink.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def main(argv: list[str]) -> None:
    target, port, separator, *command = argv
    if separator != "--" or not command:
        sys.exit("usage: gateway_bridge.py SOCKET PORT -- COMMAND...")
    server = listen(int(port))
    if os.fork() == 0:
        serve(server, target)
        os._exit(0)
    server.close()
    os.execv(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
