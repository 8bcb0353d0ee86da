"""A small TCP proxy that injects network faults between Loopline and a real service.

It forwards every connection to the real Postgres, Redis or MLflow server and, on demand, makes the link
slow (a delay before each forwarded chunk) or breaks it (every open connection reset with an RST, and new
ones reset as soon as they are accepted). The service itself is never touched: what Loopline sees is what
a flaky network or a restarted load balancer shows it.

    with TcpProxy("127.0.0.1", 6379) as proxy:
        url = f"127.0.0.1:{proxy.port}"  # point Loopline at the proxy
        proxy.reset_after(bytes_from_server=10_000)  # cut every link once 10 kB went back to the client
        proxy.heal()
"""

from __future__ import annotations

import socket
import struct
import threading
import time


def _reset(sock: socket.socket) -> None:
    """Close with SO_LINGER 0: the peer gets an RST (ECONNRESET), as after a crashed peer or a dropped route.

    ``shutdown(SHUT_RD)`` first wakes the pump thread blocked in ``recv`` on this socket: until that call
    returns the kernel keeps the socket open, and the RST would never leave.
    """
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.shutdown(socket.SHUT_RD)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


class TcpProxy:
    """Forwards ``127.0.0.1:<port>`` to ``host:port`` through threads; faults are switched on at any time."""

    def __init__(self, host: str, port: int):
        self.target = (host, port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._links: list[tuple[socket.socket, socket.socket]] = []
        self._killed: set[int] = set()  # sockets being reset: their pumps must not end them with a FIN
        self.delay_s = 0.0
        self.refuse = False
        self._reset_budget: int | None = None  # bytes the server may still send before every link is cut
        self.connections = 0
        self.resets = 0
        self._closed = False
        threading.Thread(target=self._accept, daemon=True, name=f"tcp-proxy-{self.port}").start()

    # --- faults ------------------------------------------------------------------------------------------

    def add_latency(self, seconds: float) -> None:
        """Delay every forwarded chunk, both ways, by ``seconds``."""
        self.delay_s = seconds

    def reset_all(self) -> None:
        """Reset every open connection now and every new one until :meth:`heal`."""
        self.refuse = True
        with self._lock:
            links, self._links = self._links, []
        for client, upstream in links:
            self.resets += 1
            self._killed.update((id(client), id(upstream)))
            _reset(client)
            _reset(upstream)

    def reset_after(self, bytes_from_server: int) -> None:
        """Let ``bytes_from_server`` more bytes reach the client, then reset everything (mid-transfer)."""
        self._reset_budget = bytes_from_server

    def heal(self) -> None:
        """No more faults: new connections are forwarded untouched."""
        self.refuse, self.delay_s, self._reset_budget = False, 0.0, None

    # --- forwarding --------------------------------------------------------------------------------------

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            if self.refuse:
                self.resets += 1
                _reset(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=10)
                upstream.settimeout(None)
            except OSError:
                _reset(client)
                continue
            with self._lock:
                self._links.append((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, from_server: bool) -> None:
        while True:
            try:
                chunk = source.recv(65536)
            except OSError:
                chunk = b""
            if not chunk:
                if id(source) in self._killed or id(sink) in self._killed:
                    return
                for sock in (source, sink):
                    try:
                        sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                return
            if self.delay_s:
                time.sleep(self.delay_s)
            if from_server and self._reset_budget is not None:
                if len(chunk) >= self._reset_budget:
                    chunk = chunk[:self._reset_budget]
                    try:
                        if chunk:
                            sink.sendall(chunk)
                    except OSError:
                        pass
                    self.reset_all()
                    return
                self._reset_budget -= len(chunk)
            try:
                sink.sendall(chunk)
            except OSError:
                return

    def close(self) -> None:
        self._closed = True
        self.reset_all()
        try:
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept (close alone does not)
        except OSError:
            pass
        self._listener.close()

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
