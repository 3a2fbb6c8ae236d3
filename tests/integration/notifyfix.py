"""The service manager's side of the sd_notify(3) protocol, for tests of
cmkcertfs as a Type=notify service: a unix datagram socket to name in
NOTIFY_SOCKET, and what arrives on it."""

import socket
import time


class Manager:
    """The service manager's side of the notification protocol."""

    def __init__(self, path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.seen = []

    def next(self, timeout):
        """The next datagram as a dict of its lines (KEY -> VALUE), or None after timeout seconds."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(4096).decode()
        except socket.timeout:
            return None
        msg = dict(line.split("=", 1) for line in data.split("\n") if line)
        self.seen.append(msg)
        return msg

    def wait_for(self, key, timeout, value=None):
        """Messages until one carries KEY (with VALUE when given); returns it, or None."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = self.next(max(0.01, deadline - time.monotonic()))
            if msg is not None and key in msg and (value is None or msg[key] == value):
                return msg
        return None

    def collect(self, seconds):
        """Every message for `seconds`."""
        out, deadline = [], time.monotonic() + seconds
        while time.monotonic() < deadline:
            msg = self.next(max(0.01, deadline - time.monotonic()))
            if msg is not None:
                out.append(msg)
        return out

    def close(self):
        self.sock.close()
