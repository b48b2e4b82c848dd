"""SIGINT (Ctrl-C) and SIGTERM as a request to stop training between two steps, with a checkpoint.

MindSpore's graph runtime puts its own SIGINT handler in place while a compiled graph runs, which
turns the signal into a SIGTERM of the process, and leaves it there afterwards: a Python handler
cannot see a Ctrl-C reliably. So train.py, before MindSpore starts any thread, blocks both signals
(every thread created later inherits the block) and one thread waits for them with ``sigwaitinfo``:
the first one becomes a stop request that the training loop takes after the current step, knowing
which signal it was; a second one ends the process at once (exit 128 + signal, nothing saved),
after ending its child processes (the data workers), which would otherwise outlive it for seconds.
Processes forked later (the data workers) get the signals unblocked, so they still end as
MindSpore ends them. A signal the process was started with ignored (``nohup``, a shell's
background job) stays ignored: it is blocked too, or MindSpore's handler would turn it into a
SIGTERM, and the waiting thread drops it; forked processes keep it blocked. Only for train.py's own
process: this module imports nothing but the standard library, so it can run before MindSpore is
imported.
"""
import os
import signal
import sys
import threading
import time

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopSignals:
    """Call ``install()`` first thing in the process; calling the object returns the signal number of
    a pending stop request, or 0."""

    def __init__(self, signals):
        self.signals = tuple(signals)  # the signals that stop the run: those not ignored at start
        self.received = 0

    @classmethod
    def install(cls) -> "StopSignals":
        stop = cls(s for s in STOP_SIGNALS if signal.getsignal(s) != signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        os.register_at_fork(after_in_child=stop._unblock)
        threading.Thread(target=stop._wait, name="stop-signals", daemon=True).start()
        return stop

    def _unblock(self) -> None:
        if self.signals:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, self.signals)

    def _wait(self) -> None:
        while True:
            signum = signal.sigwaitinfo(STOP_SIGNALS).si_signo
            if signum not in self.signals:  # ignored at start: stays ignored
                continue
            name = signal.Signals(signum).name
            if self.received:
                sys.stderr.write(f"{name} again: stopping now, without saving\n")
                sys.stderr.flush()
                end_children()
                os._exit(128 + signum)
            self.received = signum
            sys.stderr.write(f"{name}: training stops after the current step and saves a checkpoint (send it "
                             f"again to stop at once)\n")
            sys.stderr.flush()

    def __call__(self) -> int:
        return self.received


def end_children(grace: float = 2.0) -> None:
    """SIGTERM to every child process, SIGKILL to those still running after ``grace`` seconds; all reaped."""
    children = [pid for pid in _child_pids() if _send(pid, signal.SIGTERM)]
    deadline = time.monotonic() + grace
    while children:
        for pid in list(children):
            try:
                done = os.waitpid(pid, os.WNOHANG)[0]
            except ChildProcessError:  # reaped elsewhere
                done = pid
            if done:
                children.remove(pid)
            elif time.monotonic() > deadline:
                _send(pid, signal.SIGKILL)
        time.sleep(0.01)


def _child_pids():
    """Processes whose parent is this one (from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as handle:
                    fields = handle.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == os.getpid():
                found.append(int(entry))
    return found


def _send(pid: int, signum: int) -> bool:
    try:
        os.kill(pid, signum)
        return True
    except ProcessLookupError:
        return False
