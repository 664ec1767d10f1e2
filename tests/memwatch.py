"""Watch the memory of a command and of every process it starts, from outside (Linux /proc).

``run_watched(argv)`` starts the command and, every few milliseconds until it ends, reads
``RssAnon`` (anonymous memory: the heap, NumPy's arrays; not the pages of files read or mapped)
and ``VmHWM`` (the peak resident set, files included) of the process and all its descendants.

    >>> result, peaks = run_watched([sys.executable, "-c", "x = bytearray(50 << 20)"])  # doctest: +SKIP
    >>> max(p["anon_mb"] for p in peaks.values()) > 50                                   # doctest: +SKIP
    True
"""
import os
import subprocess
import time


def available():
    return os.path.exists(f"/proc/{os.getpid()}/status")


def _status(pid):
    """{"anon_mb", "hwm_mb", "name"} of a live process, or None."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    kb = {k: int(fields[k].split()[0]) for k in ("RssAnon", "VmHWM") if k in fields}
    if "RssAnon" not in kb:
        return None
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            command = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return None
    return {"anon_mb": kb["RssAnon"] / 1024, "hwm_mb": kb.get("VmHWM", 0) / 1024, "name": fields["Name"].strip(),
            "command": command, "ppid": int(fields["PPid"].split()[0])}


def _children(pid):
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children", encoding="ascii") as f:
                out += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return out


def descendants(pid):
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo += _children(p)
    return found


def run_watched(argv, interval=0.005, timeout=600, **kwargs):
    """(CompletedProcess, {pid: {"anon_mb": peak RssAnon, "hwm_mb": peak VmHWM seen, "name", "command"}})."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)
    peaks, end = {}, time.time() + timeout
    while proc.poll() is None and time.time() < end:
        for pid in descendants(proc.pid):
            s = _status(pid)
            if s is None:
                continue
            seen = peaks.setdefault(pid, {"anon_mb": 0.0, "hwm_mb": 0.0})
            seen.update(name=s["name"], ppid=s["ppid"])
            if s["command"] or "command" not in seen:  # the last seen (after exec), but an exiting
                seen["command"] = s["command"]          # process's empty command line is no news
            seen["anon_mb"] = max(seen["anon_mb"], s["anon_mb"])
            seen["hwm_mb"] = max(seen["hwm_mb"], s["hwm_mb"])
        time.sleep(interval)
    if proc.poll() is None:
        proc.kill()
    out, err = proc.communicate()
    return subprocess.CompletedProcess(argv, proc.returncode, out.decode(errors="replace"),
                                       err.decode(errors="replace")), peaks


def top(peaks, prefix):
    """The processes whose command starts with ``prefix``, less those another of them started (a
    fork that runs a helper program keeps its parent's command line until it has exec'd)."""
    ours = {pid for pid, p in peaks.items() if p["command"].startswith(prefix)}
    return [peaks[pid] for pid in ours if peaks[pid]["ppid"] not in ours]
