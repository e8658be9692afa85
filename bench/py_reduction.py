"""py_reduction.py: the Python reference for bench_reduction.cpp: pickle.dumps + pickle.loads
(highest protocol) of the same data the C++ side encodes: a list of 1000 str of 16-32
characters, a small record (three ints, a float, a str) as a dataclass, one int, and a
1,000,000-float array.array. Prints "name value unit" lines; each figure is the median of
several timed batches."""
import array
import dataclasses
import pickle
import random
import statistics
import time

REPS = 7


@dataclasses.dataclass
class Record:
    a: int
    b: int
    c: int
    d: float
    s: str


def per_op(fn, n):
    times = []
    for _ in range(REPS):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        times.append((time.perf_counter() - t0) / n)
    return statistics.median(times)


def main():
    rng = random.Random(42)
    strings = ["".join(chr(ord("a") + rng.randrange(26)) for _ in range(16 + rng.randrange(17)))
               for _ in range(1000)]
    rec = Record(1, 2, 3, 4.5, "a short string")
    dense = array.array("d", (i * 0.5 for i in range(1000000)))
    p = pickle.HIGHEST_PROTOCOL
    loads, dumps = pickle.loads, pickle.dumps

    t = per_op(lambda: loads(dumps(strings, p)), 300)
    print(f"pickle_vecstr_roundtrip {t * 1e6:.6g} us")
    t = per_op(lambda: loads(dumps(rec, p)), 30000)
    print(f"pickle_record_roundtrip {t * 1e9:.6g} ns")
    t = per_op(lambda: loads(dumps(12345, p)), 200000)
    print(f"pickle_int_roundtrip {t * 1e9:.6g} ns")
    t = per_op(lambda: loads(dumps(dense, p)), 20)
    print(f"pickle_vecdouble_roundtrip {len(dense) * 8 / t / 1e9:.6g} GB/s")


if __name__ == "__main__":
    main()
