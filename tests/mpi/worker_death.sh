#!/usr/bin/env bash
# worker_death.sh PROBE: a worker rank that dies while it runs a task (SIGKILL, exit(3),
# SIGSEGV) must end the run, within a bound, non-zero, with a message naming the rank.
# Open MPI 4.1 has no fault tolerance: mpirun aborts the job; we check that nothing hangs and
# that the user learns which rank died (from our worker's own report and/or mpirun's).
set -u
probe=$1
mpirun=${MP_MPIRUN:-mpirun}
fail=0
for how in kill exit segv; do
  out=$(timeout 40 "$mpirun" --allow-run-as-root --oversubscribe -np 3 "$probe" "die-$how" 2>&1)
  rc=$?
  if [[ $rc -eq 124 ]]; then
    echo "FAIL die-$how: the run hung (killed by timeout)"; echo "$out"; fail=1; continue
  fi
  if [[ $rc -eq 0 ]]; then
    echo "FAIL die-$how: exit status 0"; echo "$out"; fail=1; continue
  fi
  if grep -q "UNEXPECTED" <<<"$out"; then
    echo "FAIL die-$how: the map completed"; echo "$out"; fail=1; continue
  fi
  # mpirun: "process rank 1 with PID ... exited on signal 9"; ours: "worker rank 1 (pid ...".
  if ! grep -Eiq "rank [12]\b" <<<"$out"; then
    echo "FAIL die-$how: no message names the rank"; echo "$out"; fail=1; continue
  fi
  echo "ok die-$how (exit $rc): $(grep -Ei 'rank [12]\b' <<<"$out" | head -2 | tr '\n' ' ')"
  if [[ $how != kill ]] && ! grep -q "mp::mpi::Pool worker rank" <<<"$out"; then
    echo "FAIL die-$how: the worker did not report its own death"; echo "$out"; fail=1
  fi
done
exit $fail
