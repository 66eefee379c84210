"""A deliberately minimal WebSocket client over a raw socket, for sending what well-behaved client
libraries refuse to send (unmasked frames, bad UTF-8, reserved bits, bad close codes)."""

import base64
import os
import socket
import struct
import time


class RawWs:
    def __init__(self, address, path="/", headers=None, timeout=5.0, do_handshake=True):
        """`address` is ("127.0.0.1", port) for TCP or a filesystem path for a Unix socket."""
        if isinstance(address, str):
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        else:
            self.sock = socket.socket(socket.AF_INET6 if ":" in address[0] else socket.AF_INET,
                                      socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(address)
        self.buffer = b""
        self.status = None
        self.response_headers = {}
        if do_handshake:
            self.handshake(path, headers)

    @staticmethod
    def url_address(url):
        """("host", port) from ws://host:port."""
        hostport = url[len("ws://"):]
        host, port = hostport.rsplit(":", 1)
        return host.strip("[]"), int(port)

    def handshake(self, path="/", headers=None, key=None):
        key = key or base64.b64encode(os.urandom(16)).decode()
        lines = [f"GET {path} HTTP/1.1", "Host: localhost", "Upgrade: websocket",
                 "Connection: Upgrade", f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
        if headers is not None:
            lines = [f"GET {path} HTTP/1.1"] + headers
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        return self.read_response()

    def read_response(self):
        while b"\r\n\r\n" not in self.buffer:
            chunk = self.sock.recv(4096)
            if not chunk:
                break
            self.buffer += chunk
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1]) if lines and len(lines[0].split()) > 1 else None
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                self.response_headers[k.strip().lower()] = v.strip()
        return self.status

    def send_frame(self, opcode, payload=b"", fin=True, mask=True, rsv=0, length_override=None):
        if isinstance(payload, str):
            payload = payload.encode()
        first = (0x80 if fin else 0) | (rsv << 4) | opcode
        n = len(payload) if length_override is None else length_override
        header = bytes([first])
        mask_bit = 0x80 if mask else 0
        if n < 126:
            header += bytes([mask_bit | n])
        elif n < 65536:
            header += bytes([mask_bit | 126]) + struct.pack("!H", n)
        else:
            header += bytes([mask_bit | 127]) + struct.pack("!Q", n)
        if mask:
            key = os.urandom(4)
            header += key
            payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + payload)

    def send_text(self, text):
        self.send_frame(0x1, text)

    def _need(self, n):
        while len(self.buffer) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("socket closed")
            self.buffer += chunk

    def recv_frame(self):
        """(fin, opcode, payload) of the next frame from the server."""
        self._need(2)
        b0, b1 = self.buffer[0], self.buffer[1]
        n = b1 & 0x7F
        pos = 2
        if n == 126:
            self._need(4)
            n = struct.unpack("!H", self.buffer[2:4])[0]
            pos = 4
        elif n == 127:
            self._need(10)
            n = struct.unpack("!Q", self.buffer[2:10])[0]
            pos = 10
        assert not (b1 & 0x80), "server frames must not be masked"
        self._need(pos + n)
        payload = self.buffer[pos:pos + n]
        self.buffer = self.buffer[pos + n:]
        return bool(b0 & 0x80), b0 & 0x0F, payload

    def recv_text(self):
        while True:
            fin, op, payload = self.recv_frame()
            if op == 0x1:
                return payload.decode()
            if op == 0x8:
                raise EOFError(f"closed: {self.close_code_of(payload)}")

    @staticmethod
    def close_code_of(payload):
        return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005

    def expect_close(self, timeout=5.0):
        """Reads frames until a close frame; returns its code. Then expects the socket to end."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            fin, op, payload = self.recv_frame()
            if op == 0x8:
                return self.close_code_of(payload)
        raise TimeoutError("no close frame")

    def socket_closed(self, timeout=3.0):
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def zero_mask_frame(opcode, payload):
    """One complete masked client frame whose mask key is zero (legal: the server cannot tell), so
    a multi-megabyte payload needs no byte-by-byte XOR in Python."""
    if isinstance(payload, str):
        payload = payload.encode()
    n = len(payload)
    header = bytes([0x80 | opcode])
    if n < 126:
        header += bytes([0x80 | n])
    elif n < 65536:
        header += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        header += bytes([0x80 | 127]) + struct.pack("!Q", n)
    return header + b"\0\0\0\0" + payload
