"""A single-node SLURM cluster on loopback for the tests: munged + slurmctld + slurmd (Debian's
slurm-wlm 22.05), everything (config, state, sockets, logs) under one temporary folder.

The node declares what the `slurm_gpu` preset asks for (4 "GPUs": null-device nodes as GRES files, 32 CPUs,
plenty of memory) and slurmd is told to trust the config over the hardware
(SlurmdParameters=config_overrides): the preset runs unmodified, 4 array jobs at once, on a
2-core machine without a GPU. No accounting daemon: submitit falls back to its result files.

    python -m tests.services.slurm_cluster DIR   # starts it, prints `SLURM_CONF=...`, serves until killed
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
PARTITION = "gpu"  # the partition the slurm_gpu preset names


def missing() -> str | None:
    """Why a cluster cannot be started here, or None."""
    for exe in (*DAEMONS, "sbatch", "squeue", "scontrol"):
        if not (shutil.which(exe) or Path(f"/usr/sbin/{exe}").exists()):
            return f"{exe} not found (Debian: apt-get install slurm-wlm munge; .ci/run installs them)"
    if os.geteuid() != 0:
        return "slurmd must run as root to start jobs (CI runs as root)"
    return None


def _exe(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _conf(root: Path, host: str) -> str:
    ctld, slurmd = _free_ports(2)
    return f"""\
ClusterName=runnertest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld}
SlurmdPort={slurmd}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={root}/munge/munge.socket
CredType=cred/munge
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
ReturnToService=2
MpiDefault=none
GresTypes=gpu
NodeName={host} NodeAddr=127.0.0.1 CPUs=32 RealMemory=200000 Gres=gpu:4 State=UNKNOWN
PartitionName={PARTITION} Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


class SlurmCluster:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.conf = self.root / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        self.client_env = {"SLURM_CONF": str(self.conf)}  # what sbatch/squeue need to find this cluster
        self.procs: list[subprocess.Popen] = []

    def start(self, timeout_s: float = 60.0) -> "SlurmCluster":
        r, host = self.root, socket.gethostname().split(".")[0]
        for d in ("munge", "state", "spool", "dev"):
            (r / d).mkdir(parents=True, exist_ok=True)
        for i in range(4):  # slurmd drops GPUs without a character device: use null devices (1, 3)
            if not (r / "dev" / f"gpu{i}").exists():
                os.mknod(r / "dev" / f"gpu{i}", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        key = r / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o400)
        self.conf.write_text(_conf(r, host))
        (r / "gres.conf").write_text(f"AutoDetect=off\nNodeName={host} Name=gpu File={r}/dev/gpu[0-3]\n")
        sock = f"{r}/munge/munge.socket"
        # -F: foreground, so the process we hold is the daemon; --force: root-owned key/dirs are fine.
        self._spawn([_exe("munged"), "-F", "--force", f"--key-file={key}", f"--socket={sock}",
                     f"--pid-file={r}/munge/munged.pid", f"--seed-file={r}/munge/seed",
                     f"--log-file={r}/munge/munged.log"])
        self._wait(lambda: Path(sock).exists(), timeout_s, "munged socket")
        self._spawn([_exe("slurmctld"), "-D", "-c", "-f", str(self.conf)])
        self._spawn([_exe("slurmd"), "-D", "-f", str(self.conf)])
        self._wait(self._node_idle, timeout_s, "node idle in sinfo")
        return self

    def _spawn(self, cmd: list[str]) -> None:
        log = open(self.root / f"{Path(cmd[0]).name}.out", "ab")
        self.procs.append(subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                           start_new_session=True))

    def _node_idle(self) -> bool:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], env=self.env, capture_output=True, text=True)
        return out.returncode == 0 and out.stdout.strip() in ("idle", "mixed", "allocated")

    def _wait(self, ok, timeout_s: float, what: str) -> None:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if ok():
                return
            if any(p.poll() is not None for p in self.procs):
                break
            time.sleep(0.3)
        logs = "\n".join(f"--- {f.name}\n{f.read_text(errors='replace')[-1500:]}"
                         for f in sorted(self.root.glob("*.log")) + sorted(self.root.glob("*.out")))
        self.stop()
        raise RuntimeError(f"SLURM test cluster: {what} not reached in {timeout_s:.0f} s\n{logs}")

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
        self.procs.clear()


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # run the `finally` below
    c = SlurmCluster(Path(sys.argv[1])).start()
    print(f"SLURM_CONF={c.conf}", flush=True)
    try:
        signal.pause()
    finally:
        c.stop()
