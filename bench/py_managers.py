# py_managers.py: Python's reference for bench_managers: multiprocessing.Manager (fork start
# method). Prints "name value unit" lines (same names as bench_managers, "python_" prefixed).
import multiprocessing as mp
import sys
import time


def appender(lst, n, q):
    lst.append(-1)  # connect first
    t = time.perf_counter()
    for i in range(n):
        lst.append(i)
    q.put(n / (time.perf_counter() - t))


def setter(d, n, q):
    d["warm"] = 0
    t = time.perf_counter()
    for i in range(n):
        d[i] = i
    q.put(n / (time.perf_counter() - t))


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 50000
    reps = int(sys.argv[2]) if len(sys.argv) > 2 else 5000
    ctx = mp.get_context("fork")
    with ctx.Manager() as m:
        q = ctx.Queue()
        lst = m.list()
        p = ctx.Process(target=appender, args=(lst, n, q))
        p.start()
        rate = q.get()
        p.join()
        assert len(lst) == n + 1
        print(f"python_list_append_from_child {rate:.1f} ops/s", flush=True)
        d = m.dict()
        p = ctx.Process(target=setter, args=(d, n, q))
        p.start()
        rate = q.get()
        p.join()
        assert len(d) == n + 1
        print(f"python_dict_set_from_child {rate:.1f} ops/s", flush=True)
        d2 = m.dict()
        d2["k"] = 0
        t = time.perf_counter()
        for i in range(reps):
            d2["k"] = i
            assert d2["k"] == i
        print(f"python_set_get_roundtrip {(time.perf_counter() - t) / reps * 1e6:.2f} us", flush=True)
        v = m.list([0])
        t = time.perf_counter()
        for i in range(reps):
            len(v)
        print(f"python_read_roundtrip {(time.perf_counter() - t) / reps * 1e6:.2f} us", flush=True)


if __name__ == "__main__":
    main()
