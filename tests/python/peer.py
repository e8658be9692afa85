"""peer.py: the Python side of tests/test_connection.cpp's interop cases (Python:
multiprocessing.connection). It prints its address (listener modes) and one status line per
connection on stdout, flushed, and exits 0 unless something unexpected happened.

  peer.py listener ADDRESS KEY N        a Python Listener (native handshake) serving N
                                        connections from our Client in turn
  peer.py client ADDRESS KEYS           a Python Client (native handshake) connecting to our
                                        Listener once per comma-separated key
  peer.py modern-listener ADDRESS KEY DIGESTS
  peer.py modern-client ADDRESS KEYS    as above, but each connection is opened with
                                        authkey=None and the Python 3.12+ handshake
                                        ({digest}-prefixed challenge, HMAC over the whole
                                        message) is performed here by hand; the listener uses
                                        the comma-separated DIGESTS, one per connection.

A key '-' means no authkey. ADDRESS is "host:port" or a Unix socket path (containing '/').
Per connection: "AUTH_OK" or "AUTH_FAIL <exception>"; after AUTH_OK the client side sends
messages and the listener side answers each with a prefix ("py:" from Python), b"bye" ends
the exchange, and the side that is Python prints "OK ...".
"""
import hmac
import os
import sys
from multiprocessing.connection import AuthenticationError, Client, Listener

CHALLENGE = b"#CHALLENGE#"
WELCOME = b"#WELCOME#"
FAILURE = b"#FAILURE#"


def parse_address(text):
    if "/" in text:
        return text
    host, _, port = text.rpartition(":")
    return (host, int(port))


def format_address(addr):
    if isinstance(addr, tuple):
        return "%s:%d" % (addr[0], addr[1])
    return addr


def parse_key(text):
    return None if text == "-" else text.encode()


def say(*words):
    print(*words, flush=True)


# The Python 3.12+ handshake, written out (the machine's Python may be older).
def split_digest(message):
    """The digest name a challenge or response names, and its payload; '' for legacy MD5."""
    if len(message) in (16, 20):
        return "", message
    if message.startswith(b"{"):
        end = message.find(b"}", 1, 10)
        if end > 0:
            return message[1:end].decode("ascii"), message[end + 1:]
    raise AuthenticationError("bad digest prefix: %r" % message[:16])


def deliver_by_hand(conn, key, digest):
    message = b"{" + digest.encode("ascii") + b"}" + os.urandom(40)
    conn.send_bytes(CHALLENGE + message)
    response = conn.recv_bytes(256)
    name, mac = split_digest(response)
    expected = hmac.new(key, message, name or "md5").digest()
    if len(mac) != len(expected) or not hmac.compare_digest(mac, expected):
        conn.send_bytes(FAILURE)
        raise AuthenticationError("wrong digest from the C++ side")
    conn.send_bytes(WELCOME)


def answer_by_hand(conn, key):
    message = conn.recv_bytes(256)
    if not message.startswith(CHALLENGE):
        raise AuthenticationError("expected a challenge")
    message = message[len(CHALLENGE):]
    name, _ = split_digest(message)
    if not name:
        conn.send_bytes(hmac.new(key, message, "md5").digest())
    else:
        conn.send_bytes(b"{" + name.encode("ascii") + b"}" + hmac.new(key, message, name).digest())
    if conn.recv_bytes(256) != WELCOME:
        raise AuthenticationError("the C++ side rejected our digest")


def big_payload():
    period = bytes((i * 31) % 251 for i in range(251))
    n = 1 << 20
    return (period * (n // 251 + 1))[:n]


def serve(conn):
    """Listener side of the exchange: echo with a prefix until b'bye'."""
    count = 0
    while True:
        m = conn.recv_bytes()
        conn.send_bytes(b"py:" + m)
        count += 1
        if m == b"bye":
            break
    say("OK", count)


def talk(conn, prefix):
    """Client side of the exchange: small, empty and 1 MiB messages, then b'bye'."""
    for m in (b"hello from python", b"", big_payload(), b"bye"):
        conn.send_bytes(m)
        r = conn.recv_bytes()
        if r != prefix + m:
            say("MISMATCH", len(r), len(m))
            sys.exit(3)
    say("OK")


def main():
    mode, address = sys.argv[1], parse_address(sys.argv[2])
    if mode in ("listener", "modern-listener"):
        key = parse_key(sys.argv[3])
        if mode == "listener":
            native_key, digests = key, [None] * int(sys.argv[4])
        else:
            native_key, digests = None, sys.argv[4].split(",")
        with Listener(address, authkey=native_key) as listener:
            say(format_address(listener.address))
            for digest in digests:
                try:
                    conn = listener.accept()
                    if digest is not None:
                        deliver_by_hand(conn, key, digest)
                        answer_by_hand(conn, key)
                except (AuthenticationError, EOFError, ConnectionError) as e:
                    say("AUTH_FAIL", type(e).__name__)
                    continue
                say("AUTH_OK")
                serve(conn)
                conn.close()
    elif mode in ("client", "modern-client"):
        for key in map(parse_key, sys.argv[3].split(",")):
            try:
                if mode == "client":
                    conn = Client(address, authkey=key)
                else:
                    conn = Client(address, authkey=None)
                    answer_by_hand(conn, key)
                    deliver_by_hand(conn, key, "sha256")
            except (AuthenticationError, EOFError, ConnectionError) as e:
                say("AUTH_FAIL", type(e).__name__)
                continue
            say("AUTH_OK")
            talk(conn, b"cpp:")
            conn.close()
    else:
        sys.exit("unknown mode " + mode)


if __name__ == "__main__":
    main()
