"""py_connection.py: the Python reference for bench_connection.cpp (multiprocessing.Pipe with
fork children): 8-byte round trip, one-way 8-byte and 1 MiB throughput. Prints
"name value unit" lines; each figure is the median of several runs."""
import multiprocessing as mp
import statistics
import time

RTT_ROUNDS = 20000
SMALL = 200000
BIG_COUNT = 300
BIG = 1 << 20
REPS = 5


def echo(conn, rounds):
    for _ in range(rounds):
        conn.send_bytes(conn.recv_bytes())


def sender(conn, size, count):
    msg = b"x" * size
    for _ in range(count):
        conn.send_bytes(msg)


def rtt():
    a, b = mp.Pipe()
    p = mp.Process(target=echo, args=(b, RTT_ROUNDS))
    p.start()
    msg = b"x" * 8
    t0 = time.perf_counter()
    for _ in range(RTT_ROUNDS):
        a.send_bytes(msg)
        a.recv_bytes()
    t = time.perf_counter() - t0
    p.join()
    return t / RTT_ROUNDS * 1e6


def oneway(size, count):
    rx, tx = mp.Pipe(False)
    p = mp.Process(target=sender, args=(tx, size, count))
    p.start()
    t0 = time.perf_counter()
    for _ in range(count):
        rx.recv_bytes()
    t = time.perf_counter() - t0
    p.join()
    return t


def main():
    mp.set_start_method("fork")
    print("py_pipe_rtt_us %.6g us" % statistics.median(rtt() for _ in range(REPS)), flush=True)
    print("py_pipe_small_msgs %.6g msg/s" % (SMALL / statistics.median(oneway(8, SMALL) for _ in range(REPS))), flush=True)
    gb = BIG * BIG_COUNT / 1e9
    print("py_pipe_1mib_gbps %.6g GB/s" % (gb / statistics.median(oneway(BIG, BIG_COUNT) for _ in range(REPS))), flush=True)


if __name__ == "__main__":
    main()
