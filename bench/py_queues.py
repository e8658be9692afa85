"""py_queues.py: the Python reference for bench_queues.cpp (multiprocessing.Queue with fork
children): 1 -> 1 throughput of small ints and of 1 KiB strings, 2 producers -> 2 consumers
throughput of small ints, and the round trip of an int through two queues (parent <-> child).
Prints "name value unit" lines; each figure is the median of several runs."""
import multiprocessing as mp
import statistics
import time

N_INT = 200000
N_KIB = 100000
N_22 = 100000  # per producer
RTT_ROUNDS = 10000
REPS = 3


def producer(q, n, item, go):
    go.wait()
    for _ in range(n):
        q.put(item)


def consumer(q, n, done):
    for _ in range(n):
        q.get()
    done.put(time.perf_counter())


def throughput(producers, consumers, per_producer, item):
    q = mp.Queue()
    go = mp.Event()
    done = mp.Queue()
    total = producers * per_producer
    per_consumer = total // consumers
    procs = [mp.Process(target=producer, args=(q, per_producer, item, go)) for _ in range(producers)]
    procs += [mp.Process(target=consumer, args=(q, per_consumer, done)) for _ in range(consumers)]
    for p in procs:
        p.start()
    time.sleep(0.2)  # let every process come up before the clock starts
    t0 = time.perf_counter()
    go.set()
    end = max(done.get() for _ in range(consumers))
    for p in procs:
        p.join()
    return total / (end - t0)


def echo(a, b, rounds):
    for _ in range(rounds):
        b.put(a.get())


def rtt():
    a, b = mp.Queue(), mp.Queue()
    p = mp.Process(target=echo, args=(a, b, RTT_ROUNDS + 100))
    p.start()
    for i in range(100):  # warm up: feeder threads started, child running
        a.put(i)
        b.get()
    t0 = time.perf_counter()
    for i in range(RTT_ROUNDS):
        a.put(i)
        b.get()
    t = time.perf_counter() - t0
    p.join()
    return t / RTT_ROUNDS * 1e6


def median(f, *args):
    return statistics.median(f(*args) for _ in range(REPS))


if __name__ == "__main__":
    mp.set_start_method("fork")
    print("py_queue_int_1to1", median(throughput, 1, 1, N_INT, 12345), "msg/s", flush=True)
    print("py_queue_1kib_1to1", median(throughput, 1, 1, N_KIB, "x" * 1024), "msg/s", flush=True)
    print("py_queue_int_2to2", median(throughput, 2, 2, N_22, 12345), "msg/s", flush=True)
    print("py_queue_rtt_us", median(rtt), "us", flush=True)
