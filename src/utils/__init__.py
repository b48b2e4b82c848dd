"""Low-level helpers every package may use (below ``models`` and ``data``; imports nothing of the project):
files written atomically, output folders and their lock (``files``), whether a process is alive and waiting
for a condition (``processes``), classification metrics on host arrays (``metrics``)."""
