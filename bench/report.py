# report.py: turns the "program name value unit" lines of bench/run.sh into
# docs/benchmarks.md (one table per program) and a gnuplot chart of the ratio figures.
import datetime
import os
import platform
import subprocess
import sys


def main(raw, md, png, command):
    rows = {}
    for line in open(raw):
        parts = line.split()
        if len(parts) != 4:
            continue
        prog, name, value, unit = parts
        rows.setdefault(prog, []).append((name, value, unit))
    cpu = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    # Keep the tables of programs not run this time (a partial run updates only its own).
    old = {}
    if os.path.exists(md):
        current = None
        for line in open(md):
            if line.startswith("## "):
                current = line[3:].strip()
                old[current] = []
            elif current and line.startswith("| ") and not line.startswith("| figure") and not line.startswith("|---"):
                cells = [c.strip() for c in line.strip().strip("|").split("|")]
                if len(cells) == 3:
                    old[current].append(tuple(cells))
    for prog, r in old.items():
        rows.setdefault(prog, r)
    with open(md, "w") as f:
        f.write("# Benchmarks\n\n")
        f.write("Made by `%s` on %s, %d CPUs (%s), %s. Each program measures the C++ library, the raw OS "
                "primitive and Python's multiprocessing in the same run; lines with unit `x` are ratios "
                "(see each program's source in bench/ for which way round).\n\n"
                % (command.strip(), datetime.date.today().isoformat(), os.cpu_count(), cpu, platform.python_version()))
        f.write("![ratios](benchmarks.png)\n\n")
        for prog in sorted(rows):
            f.write("## %s\n\n| figure | value | unit |\n|---|---|---|\n" % prog)
            for name, value, unit in rows[prog]:
                f.write("| %s | %s | %s |\n" % (name, value, unit))
            f.write("\n")
    ratios = [(n, float(v)) for prog in sorted(rows) for (n, v, u) in rows[prog] if u == "x"]
    if not ratios:
        return
    data = png + ".dat"
    with open(data, "w") as f:
        for i, (n, v) in enumerate(ratios):
            f.write('%d "%s" %s\n' % (i, n.replace("_", "\\\\_"), v))
    script = f"""
set terminal pngcairo size 1000,{200 + 22 * len(ratios)} font ",9"
set output "{png}"
set title "Ratios (unit x) from docs/benchmarks.md"
set style fill solid 0.6
set boxwidth 0.7
set yrange [-1:{len(ratios)}]
set ytics nomirror
set logscale x
set xlabel "ratio (log scale)"
set grid xtics
unset key
plot "{data}" using (($3)/2):1:(($3)/2):(0.35):yticlabels(2) with boxxyerror lc rgb "#4477aa", \\
     "{data}" using ($3):1:(sprintf("%.3g", $3)) with labels left offset 0.5,0
"""
    try:
        subprocess.run(["gnuplot"], input=script, text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as e:
        print("report.py: gnuplot failed:", e, file=sys.stderr)
    finally:
        os.remove(data)


if __name__ == "__main__":
    main(*sys.argv[1:5])
