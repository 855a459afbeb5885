"""`fibergrid profile`: utilization profiling of CPU devices, one concept per module.

    collect    Recorder: trace rings on, per-thread CPU accounting, optional host timestamps
    matching   which program a submission ran, from its events (nothing recorded per call)
    naming     a program's commands named: entry points, registered source names, bytes
    sources    a StableHLO region's source ops, Python lines and flops (read-only compiler use)
    analysis   lanes, dispatches, the call breakdown and the critical path, from a capture
    findings   the ranked plain-language explanations
    report     text tables and JSON;  chrome: Perfetto trace JSON;  timeline: the PNG
    peak       the measured BLAS reference rate for "% of peak"
    session    FIBERGRID_PROFILE: every device of a program traced, captures left at exit
    command    the CLI subcommand
"""
