"""SIGINT (Ctrl-C) and SIGTERM as a request to stop training between two steps, with a checkpoint.

MindSpore's graph runtime puts its own SIGINT handler in place while a compiled graph runs, which
turns the signal into a SIGTERM of the process, and leaves it there afterwards: a Python handler
cannot see a Ctrl-C reliably. So train.py, before MindSpore starts any thread, blocks both signals
(every thread created later inherits the block) and one thread waits for them with ``sigwaitinfo``:
the first one becomes a stop request that the training loop takes after the current step, knowing
which signal it was; a second one ends the process at once (exit 128 + signal, nothing saved).
Processes forked later (the data workers) get the signals unblocked, so they still end as
MindSpore ends them. A signal the process was started with ignored (``nohup``, a shell's
background job) stays ignored. Only for train.py's own process: this module imports nothing but
the standard library, so it can run before MindSpore is imported.
"""
import os
import signal
import sys
import threading

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopSignals:
    """Call ``install()`` first thing in the process; calling the object returns the signal number of
    a pending stop request, or 0."""

    def __init__(self, signals):
        self.signals = tuple(signals)
        self.received = 0

    @classmethod
    def install(cls) -> "StopSignals":
        stop = cls(s for s in STOP_SIGNALS if signal.getsignal(s) != signal.SIG_IGN)
        if stop.signals:
            signal.pthread_sigmask(signal.SIG_BLOCK, stop.signals)
            os.register_at_fork(after_in_child=stop._unblock)
            threading.Thread(target=stop._wait, name="stop-signals", daemon=True).start()
        return stop

    def _unblock(self) -> None:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, self.signals)

    def _wait(self) -> None:
        while True:
            signum = signal.sigwaitinfo(self.signals).si_signo
            name = signal.Signals(signum).name
            if self.received:
                sys.stderr.write(f"{name} again: stopping now, without saving\n")
                sys.stderr.flush()
                os._exit(128 + signum)
            self.received = signum
            sys.stderr.write(f"{name}: training stops after the current step and saves a checkpoint (send it "
                             f"again to stop at once)\n")
            sys.stderr.flush()

    def __call__(self) -> int:
        return self.received
