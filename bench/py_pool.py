# py_pool.py: Python's reference for bench_pool: multiprocessing.Pool with the fork start
# method and 2 workers. Prints "name value unit" lines (same names as bench_pool, "python_"
# prefixed).
import multiprocessing as mp
import sys
import time


def trivial(x):
    return x + 1


def burn(x):
    acc = 0
    for i in range(CPU_ITERS):
        acc = (acc * 31 + i + x) % 1000003
    return acc


CPU_ITERS = 20000


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200000
    n1 = int(sys.argv[2]) if len(sys.argv) > 2 else 200000
    ctx = mp.get_context("fork")
    items = list(range(n))
    with ctx.Pool(2) as pool:
        pool.map(trivial, range(1000))  # warm-up
        best = float("inf")
        for _ in range(5):  # best of 5, as the C++ side does
            t = time.perf_counter()
            pool.map(trivial, items)
            best = min(best, time.perf_counter() - t)
        print(f"python_map_default_chunksize_per_task {best / n * 1e9:.1f} ns", flush=True)
        t = time.perf_counter()
        pool.map(trivial, range(n1), chunksize=1)
        print(f"python_map_chunksize1_per_task {(time.perf_counter() - t) / n1 * 1e9:.1f} ns", flush=True)
        reps = 2000
        t = time.perf_counter()
        for i in range(reps):
            pool.apply_async(trivial, (i,)).get()
        print(f"python_apply_async_roundtrip {(time.perf_counter() - t) / reps * 1e6:.2f} us", flush=True)
        # CPU-bound speed-up on 2 workers: ~1 ms per task.
        work = list(range(200))
        t = time.perf_counter()
        for x in work:
            burn(x)
        seq = time.perf_counter() - t
        t = time.perf_counter()
        pool.map(burn, work)
        par = time.perf_counter() - t
        print(f"python_cpu_map_speedup_2 {seq / par:.3f} x", flush=True)
    times = []
    for _ in range(10):
        t = time.perf_counter()
        p = ctx.Pool(2)
        p.close()
        p.join()
        times.append(time.perf_counter() - t)
    times.sort()
    print(f"python_pool_create_shutdown {times[len(times) // 2] * 1e3:.2f} ms", flush=True)


if __name__ == "__main__":
    main()
