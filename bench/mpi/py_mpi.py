# py_mpi.py: mpi4py's reference for bench_mpi: MPIPoolExecutor (mpi4py.futures) with the
# same items, chunksizes and CPU-bound function. Run by bench_mpi as
#   mpirun -np 3 /usr/bin/python3 -m mpi4py.futures py_mpi.py N N1
# (rank 0 runs this script, ranks 1 and 2 are the executor's workers). Prints "name value
# unit" lines, "mpi4py_" prefixed.
import sys
import time

from mpi4py.futures import MPIPoolExecutor

CPU_ITERS = 20000


def trivial(x):
    return x + 1


def burn(x):
    acc = 0
    for i in range(CPU_ITERS):
        acc = (acc * 31 + i + x) % 1000003
    return acc


def main():
    n16 = int(sys.argv[1]) if len(sys.argv) > 1 else 50000
    n1 = int(sys.argv[2]) if len(sys.argv) > 2 else 10000
    with MPIPoolExecutor() as ex:
        list(ex.map(trivial, range(1000)))  # warm-up: the workers are up
        t = time.perf_counter()
        list(ex.map(trivial, range(n1), chunksize=1))
        print(f"mpi4py_map_chunksize1_per_task {(time.perf_counter() - t) / n1 * 1e9:.1f} ns", flush=True)
        t = time.perf_counter()
        list(ex.map(trivial, range(n16), chunksize=16))
        print(f"mpi4py_map_chunksize16_per_task {(time.perf_counter() - t) / n16 * 1e9:.1f} ns", flush=True)
        work = list(range(200))
        t = time.perf_counter()
        for x in work:
            burn(x)
        seq = time.perf_counter() - t
        t = time.perf_counter()
        list(ex.map(burn, work, chunksize=25))
        par = time.perf_counter() - t
        print(f"mpi4py_cpu_map_speedup {seq / par:.3f} x", flush=True)


if __name__ == "__main__":
    main()
