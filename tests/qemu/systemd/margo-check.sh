#!/bin/sh
# Runs inside the systemd guest (margo-check.service) and reports MARGO-SD lines on the console.
say() { echo "MARGO-SD $*" >/dev/console; }
prop() { systemctl show -p "$1" --value margo-agent; }
say "booted $(cut -d' ' -f1 /proc/uptime)"
st=
for i in $(seq 1 180); do st=$(prop ActiveState); [ "$st" = active ] && break; sleep 1; done
say "ready active=$st type=$(prop Type) uptime=$(cut -d' ' -f1 /proc/uptime)"
say "status1=$(prop StatusText)"
phase=
t0=$(cut -d. -f1 /proc/uptime)
while [ $(( $(cut -d. -f1 /proc/uptime) - t0 )) -lt ${MARGO_SD_CONVERGE_S:-420} ]; do
  phase=$(margo-agent status --json 2>/dev/null | sed -n 's/.*"phase": "\([A-Za-z]*\)".*/\1/p' | head -1)
  [ "$phase" = Installed ] || [ "$phase" = Failed ] && break
  say "progress uptime=$(cut -d' ' -f1 /proc/uptime) phase=$phase status=$(prop StatusText) podman=$(systemctl is-active podman.service) images=$(podman images -q 2>/dev/null | wc -l)"
  sleep 15
done
say "phase=$phase uptime=$(cut -d' ' -f1 /proc/uptime)"
if [ "$phase" != Installed ]; then
  journalctl -u margo-agent -u podman.service --no-pager -n 40 -o cat | cut -c1-300 |
    sed 's/^/MARGO-SD journal: /' >/dev/console
fi
say "containers=$(podman ps --format '{{.Names}}:{{.Status}}' | tr '\n' ' ')"
say "status2=$(prop StatusText)"
n=$(journalctl -u margo-agent -o json --no-pager | grep -c '"DEPLOYMENT_ID"')
say "journal_deployment_entries=$n"
say "journal_sample=$(journalctl -u margo-agent -o json --no-pager | grep '"DEPLOYMENT_ID"' | head -1 | tr -d '\n' | cut -c1-900)"
margo-agent status | sed 's/^/MARGO-SD status: /' >/dev/console
# Watchdog: freeze the agent; systemd must kill and restart it.
pid=$(prop MainPID)
kill -STOP "$pid"
say "hung pid=$pid"
n=0; np=$pid
for i in $(seq 1 200); do
  n=$(prop NRestarts); np=$(prop MainPID)
  [ "$n" -ge 1 ] && [ "$np" != "$pid" ] && [ "$np" != 0 ] && [ "$(prop ActiveState)" = active ] && break
  sleep 1
done
say "after_hang restarts=$n newpid=$np active=$(prop ActiveState)"
say "watchdog_line=$(journalctl -u margo-agent --no-pager | grep -i -m1 'watchdog timeout')"
# A broken config: one clear line, no restart storm.
cp /etc/margo-agent/config.yaml /etc/margo-agent/config.yaml.good
printf 'desired_state: [\n' >/etc/margo-agent/config.yaml
r0=$(prop NRestarts)
systemctl restart margo-agent
sleep 40
say "badconfig active=$(prop ActiveState) result=$(prop Result) restarts_before=$r0 restarts_after=$(prop NRestarts) exit=$(prop ExecMainStatus)"
say "badconfig_lines=$(journalctl -u margo-agent --no-pager | grep -c 'margo-agent cannot start')"
say "badconfig_line=$(journalctl -u margo-agent --no-pager -o cat | grep -m1 'margo-agent cannot start')"
say DONE
sync
echo o >/proc/sysrq-trigger
