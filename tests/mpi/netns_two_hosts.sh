#!/usr/bin/env bash
# netns_two_hosts.sh PROBE: mp::mpi::Pool across two "hosts" made on this machine.
#
# Two network namespaces joined by a veth pair (10.77.0.1/24 and 10.77.0.2/24), each with its
# own hostname (a UTS namespace: hosta, hostb). mpirun runs on hosta; Open MPI starts its
# daemon on hostb through plm_rsh_agent, a small script that enters hostb's namespaces
# instead of ssh-ing to it; TCP (both the out-of-band channel and the byte transfer layer) is
# restricted to 10.77.0.0/24. Rank 0 runs on hosta, ranks 1 and 2 on hostb; the workers must
# report hostb's network namespace (inode of /proc/self/ns/net), hostname and address.
# The namespaces are removed on every exit path (trap). Exit 77 (ctest: skipped) where the
# machine does not allow creating namespaces (no root, no CAP_SYS_ADMIN, no `ip`).
set -u
probe=$(readlink -f "$1")
mpirun=${MP_MPIRUN:-mpirun}
tag=$$
A=mpta$tag B=mptb$tag VA=mpva$tag VB=mpvb$tag
work=$(mktemp -d /tmp/mp_netns.XXXXXX)

cleanup() {
  for ns in "$A" "$B"; do
    if ip netns list 2>/dev/null | grep -qw "$ns"; then
      for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
      ip netns del "$ns" 2>/dev/null
    fi
  done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP

if ! command -v ip >/dev/null || ! ip netns add "$A" 2>/dev/null; then
  echo "SKIP: this machine does not allow network namespaces (ip netns add failed)"
  exit 77
fi
if ! unshare --uts true 2>/dev/null; then
  echo "SKIP: this machine does not allow UTS namespaces (unshare --uts failed)"
  exit 77
fi
set -e
ip netns add "$B"
ip link add "$VA" type veth peer name "$VB"
ip link set "$VA" netns "$A"
ip link set "$VB" netns "$B"
ip -n "$A" addr add 10.77.0.1/24 dev "$VA"
ip -n "$B" addr add 10.77.0.2/24 dev "$VB"
for ns in "$A" "$B"; do ip -n "$ns" link set lo up; done
ip -n "$A" link set "$VA" up
ip -n "$B" link set "$VB" up

# The "ssh" of this cluster: `agent HOST COMMAND...` runs COMMAND on hostb.
cat >"$work/agent.sh" <<AGENT
#!/bin/sh
shift
exec ip netns exec $B unshare --uts sh -c 'hostname hostb; exec sh -c "\$0"' "\$*"
AGENT
chmod +x "$work/agent.sh"
printf '10.77.0.1 slots=1\n10.77.0.2 slots=2\n' >"$work/hosts"
set +e

out=$(timeout 45 ip netns exec "$A" unshare --uts sh -c 'hostname hosta; exec "$@"' sh \
  "$mpirun" --allow-run-as-root -np 3 --hostfile "$work/hosts" \
  --mca plm_rsh_agent "$work/agent.sh" --mca plm_rsh_no_tree_spawn 1 \
  --mca btl tcp,self,vader --mca btl_tcp_if_include 10.77.0.0/24 --mca oob_tcp_if_include 10.77.0.0/24 \
  "$probe" where 2>&1)
rc=$?
echo "$out"
if [[ $rc -ne 0 ]]; then echo "FAIL: mpirun exited $rc"; exit 1; fi
head_line=$(grep -m1 '^rank 0 ' <<<"$out")
head_ns=$(awk '{print $4}' <<<"$head_line")
b_ns=$(ip netns exec "$B" stat -Lc %i /proc/self/ns/net)
ok=1
for r in 1 2; do
  line=$(grep -m1 "^rank $r " <<<"$out")
  if [[ -z $line ]]; then echo "FAIL: no report from worker rank $r"; ok=0; continue; fi
  ns=$(awk '{print $4}' <<<"$line")
  if [[ $ns == "$head_ns" || $ns != "$b_ns" ]]; then echo "FAIL: rank $r ran in netns $ns, not hostb's $b_ns"; ok=0; fi
  grep -q "host hostb ip .*10.77.0.2" <<<"$line" || { echo "FAIL: rank $r did not run on hostb/10.77.0.2"; ok=0; }
done
grep -q "host hosta ip .*10.77.0.1" <<<"$head_line" || { echo "FAIL: rank 0 did not run on hosta"; ok=0; }
[[ $ok == 1 ]] && echo "OK: rank 0 in netns $head_ns (hosta), workers in netns $b_ns (hostb)"
[[ $ok == 1 ]]
