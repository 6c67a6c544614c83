"""Resource sampling: ``monitor`` (the sampler's owner for the runtime), ``sampler`` (the anyio loop
in its own thread), ``proctree`` and ``system`` (the /proc probes), ``instruments`` (the observable
OTel instruments) and ``summary`` (per-window usage summaries).
"""
