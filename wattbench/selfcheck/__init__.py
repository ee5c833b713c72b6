"""wattbench's own accuracy and overhead, measured: every `wattbench selfcheck` check lives here.

- `power`: `power-accuracy` (known traces through the simulated sensor and the monitor's windows) and
  `sampler-overhead` (the sampler thread's CPU cost against costly reads).
- `gate`: `gate` (the regression gate's false-alarm and detection rates on simulated runs).
- `kernels`: `kernels` (the Triton kernels against their references and performance targets).
- `gpu` + `gpu_checks`: `gpu` (the GPU acceptance run: each step of gpu_checks in a child of its own).
- `compilation`: `compile` (every Triton kernel variant compiled for sm_80/sm_89/sm_90 without a GPU).

They time with wattbench.timing and take peaks from wattbench.specs, as the run does.
"""
