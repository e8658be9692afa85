# py_process.py: Python's reference for bench_process: start+join latency of a trivial
# multiprocessing.Process per start method. Prints "name value unit" lines.
import multiprocessing as mp
import sys
import time


def nothing():
    pass


def measure(method, n):
    ctx = mp.get_context(method)
    p = ctx.Process(target=nothing)  # warm-up (starts the forkserver if any)
    p.start()
    p.join()
    t = time.perf_counter()
    for _ in range(n):
        p = ctx.Process(target=nothing)
        p.start()
        p.join()
    return (time.perf_counter() - t) / n * 1e6


if __name__ == "__main__":
    methods = sys.argv[1].split(",") if len(sys.argv) > 1 else ["fork"]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 300
    for m in methods:
        print(f"python_{m}_start_join {measure(m, n if m == 'fork' else max(20, n // 10)):.2f} us", flush=True)
