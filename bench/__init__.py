"""sotadb benchmarks: ratios measured side by side in one run, printed, never asserted.

`python -m bench [provisioning|pooling|hostpath] [--quick] [--json PATH]`. Each section
provisions its own throw-away databases (`bench-<run id>-…`) under a temporary SOTADB_HOME and
removes them (down --purge) when it ends, however it ends. A target that is missed is reported
as MISS; only a crash of the bench itself makes the exit status non-zero.
"""
