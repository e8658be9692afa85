# py_sync.py: the Python reference for bench_sync.cpp (multiprocessing.Value and Lock).
# Prints "name value unit" lines.
import multiprocessing as mp
import sys
import time


def work(v, n, go):
    go.wait()
    for _ in range(n):
        with v.get_lock():
            v.value += 1


def main():
    mp.set_start_method("fork")
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100000
    # Value<int> increments under its lock from 2 processes.
    v = mp.Value("i", 0)
    go = mp.Event()
    ps = [mp.Process(target=work, args=(v, n, go)) for _ in range(2)]
    for p in ps:
        p.start()
    time.sleep(0.2)
    t0 = time.perf_counter()
    go.set()
    for p in ps:
        p.join()
    t = time.perf_counter() - t0
    assert v.value == 2 * n, v.value
    print(f"py.value_incr_2proc {2 * n / t / 1e6:.6g} Mops/s", flush=True)

    # Uncontended Lock acquire + release.
    lock = mp.Lock()
    m = 1000000
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(m):
            lock.acquire()
            lock.release()
        best = min(best, time.perf_counter() - t0)
    print(f"py.lock_uncontended {best / m * 1e9:.6g} ns", flush=True)


if __name__ == "__main__":
    main()
