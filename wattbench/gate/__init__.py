"""The CI regression gate: compare a run against a baseline on time and energy, telling noise from change.

- `run_gate(baseline, current, ...)`: `wattbench gate`; the GateResult (its exit_code: 0 pass, 1 regression).
- `gate_output_json(output_json, baseline, config_root, ...)`: the same at the end of a pytest run.
- `save_baseline(run, name, folder)`: `wattbench baseline save`; the SavedBaseline.
Bad input raises UsageError; cli.py (and the plugin) print the results and map them to exit codes.
- `wattbench selfcheck gate` is wattbench.selfcheck.gate.
"""

from wattbench.gate.baseline import save_baseline
from wattbench.gate.run import gate, gate_output_json, run_gate

__all__ = ["gate", "gate_output_json", "run_gate", "save_baseline"]
