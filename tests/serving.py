"""A real uvicorn server on loopback for tests (shared by the serve and remote-bench tests)."""
import socket
import threading
import time
from contextlib import contextmanager

import uvicorn

from microturn.serve.app import server_config


@contextmanager
def running(app):
    """Serve ``app`` with uvicorn on 127.0.0.1 (a free port) in a thread; yields the port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(server_config(app, port=port))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
