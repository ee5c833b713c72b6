"""The `wattbench` command. Bad input ends in one line on stderr and exit code 2, never a traceback."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from wattbench.errors import UsageError


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="wattbench", description="Time and energy of Triton kernels and PyTorch paths, "
                                                   "training vs inference, per joule.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = commands.add_parser("run", help="run the suites on this host's device and write a run file")
    run.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda:0 if present, else cpu)")
    run.add_argument("--devices", default=None, metavar="all|0,1,...",
                     help="run on several GPUs at once, one worker process per GPU, into one merged run file")
    run.add_argument("--no-report", dest="report", action="store_false", help="do not write the report and plots")
    run.add_argument("--preset", default=None, help="quick (minutes, the default) or full")
    run.add_argument("-k", dest="keyword", default=None, metavar="EXPR",
                     help="only benchmarks matching this pytest -k expression, e.g. 'gemm and infer'")
    run.add_argument("--out", type=Path, default=Path("results"), help="results folder (run files go to OUT/runs)")
    run.add_argument("--resume", type=Path, default=None, metavar="RUN.json",
                     help="continue an interrupted run: skip the benchmarks its run file already holds")
    run.add_argument("--save-trace", action="store_true", help="keep the run's power trace (CSV beside the run file)")
    run.add_argument("--power-replay", type=Path, default=None, metavar="CSV",
                     help="power log of an external meter (timestamp, watts) to attribute to the benchmarks")
    run.add_argument("--specs", type=Path, default=None, metavar="JSON",
                     help="your own device spec file (wattbench-device-specs/1), matched first: MFU and report")
    run.add_argument("--dry-run", action="store_true",
                     help="list the benchmarks that would run and the estimated time, part by part; run nothing "
                          "(--device cuda plans a GPU run on a host without one)")
    run.add_argument("--device-name", default=None, metavar="NAME",
                     help="with --dry-run: the GPU to plan for, by its name as CUDA gives it, matched in the spec "
                          "table (default on a host without a GPU: an H100 80GB)")
    run.add_argument("pytest_args", nargs=argparse.REMAINDER,
                     help="after '--': further pytest options, e.g. -- --wattbench-energy-window 10")

    report = commands.add_parser("report", help="CSV, plots, summary.md and report.html over run files from any hosts")
    report.add_argument("runs", nargs="+", type=Path, metavar="RUN", help="run files (results/runs/*.json)")
    report.add_argument("--out", type=Path, default=None,
                        help="report folder (default: results/reports/RUN for one run file, "
                             "results/reports/combined-N-runs-DIGEST for several)")
    report.add_argument("--force", action="store_true", help="write into a folder that holds another report")
    report.add_argument("--skip-bad", action="store_true",
                        help="leave out run files that cannot be read (else they are an error)")
    report.add_argument("--specs", type=Path, default=None,
                        help="your own device spec file (wattbench-device-specs/1 JSON), matched first")
    report.add_argument("--trace", type=Path, default=None,
                        help="power trace CSV (--save-trace): of the run it was saved beside (RUN.trace.csv), "
                             "else of the first run")
    cost = report.add_argument_group("cost and carbon (derived, never measured; default: [tool.wattbench.cost] "
                                     "in pyproject.toml, else none: without an input no such column appears)")
    cost.add_argument("--electricity-price", type=float, default=None, metavar="PRICE",
                      help="price of a kWh: energy cost per 1M units of work")
    cost.add_argument("--currency", default=None, help="the prices' currency, a label only (e.g. USD)")
    cost.add_argument("--pue", type=float, default=None, help="facility energy / IT energy (default 1)")
    cost.add_argument("--carbon-intensity", type=float, default=None, metavar="G_PER_KWH",
                      help="grid carbon intensity in gCO2e/kWh: CO2e per 1M units")
    cost.add_argument("--device-price", action="append", default=[], metavar="PATTERN=PRICE",
                      help="price per device-hour of the devices whose name matches PATTERN (repeatable): "
                           "hardware cost per 1M units")
    cost.add_argument("--max-latency-ms", type=float, default=None,
                      help="rank by cost only configurations whose median latency per call meets this bound")

    select = commands.add_parser("select", help="rank devices by work per joule for a workload under a latency bound")
    select.add_argument("runs", nargs="+", type=Path, metavar="RUN", help="run files (results/runs/*.json)")
    select.add_argument("--workload", required=True, help="e.g. gemm.infer")
    select.add_argument("--max-latency-ms", type=float, default=None, help="bound on the median latency per call")
    select.add_argument("--max-ttft-ms", type=float, default=None, help="bound on the TTFT p50 (LLM cases)")
    select.add_argument("--max-tpot-ms", type=float, default=None,
                        help="bound on the TPOT p50 (LLM decode), e.g. 40: names the device and sweep setting")
    select.add_argument("--metric", default="units_per_joule",
                        help="units_per_joule | joules_per_unit | units_per_s | median_ms | tflops")
    select.add_argument("--allow-fallback", action="store_true",
                        help="rank by units_per_s when the energy metric asked for was measured on no device")
    select.add_argument("--skip-bad", action="store_true",
                        help="leave out run files that cannot be read (else they are an error)")
    select.add_argument("--precisions", action="store_true",
                        help="rank the workload's precisions per batch size instead of devices: the crossover map, "
                             "inside the accuracy budget ([tool.wattbench.accuracy])")

    gate = commands.add_parser("gate", help="compare a run with a baseline on time and energy; exit 1 on a regression")
    gate.add_argument("--baseline", type=Path, required=True, metavar="JSON", help="the baseline run file")
    gate.add_argument("--current", type=Path, required=True, metavar="JSON", help="the run file to check")
    gate.add_argument("--time-threshold", default=None, metavar="PCT",
                      help="e.g. 5%% (default: [tool.wattbench.gate] in pyproject.toml, else 5%%)")
    gate.add_argument("--energy-threshold", default=None, metavar="PCT",
                      help="e.g. 5%% (default: [tool.wattbench.gate] in pyproject.toml, else 5%%)")
    gate.add_argument("--strict", action="store_true", help="fail when a baseline benchmark is missing from the run")
    gate.add_argument("--force", action="store_true",
                      help="compare across device names, driver major versions or interpreted/compiled Triton")
    gate.add_argument("--markdown", type=Path, default=None, metavar="FILE", help="write the Markdown summary here")
    gate.add_argument("--junit", type=Path, default=None, metavar="FILE", help="write JUnit XML here")

    baseline = commands.add_parser("baseline", help="store run files as named baselines for the gate")
    baseline_commands = baseline.add_subparsers(dest="baseline_command", metavar="save", parser_class=_Parser)
    save = baseline_commands.add_parser("save", help="copy a run file to results/baselines/NAME.json with provenance")
    save.add_argument("run", type=Path, metavar="RUN.json")
    save.add_argument("--name", default=None, help="default: <device>-<commit>")
    save.add_argument("--force", action="store_true", help="replace a baseline of the same name")

    commands.add_parser("devices", help="list the compute devices and power sources this host offers, and why")

    sweep = commands.add_parser("sweep", help="run the suites once per power limit or locked clock (and the default "
                                              "setting) into one run file; --restore puts back what a sweep that "
                                              "died left changed")
    sweep.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda:0 if present, else cpu)")
    sweep.add_argument("--preset", default=None, help="quick (the default) or full")
    sweep.add_argument("-k", dest="keyword", default=None, metavar="EXPR",
                       help="only benchmarks matching this pytest -k expression, e.g. 'llm and decode'")
    sweep.add_argument("--out", type=Path, default=Path("results"), help="results folder (run files go to OUT/runs)")
    sweep.add_argument("--no-report", dest="report", action="store_false", help="do not write the report and plots")
    sweep.add_argument("--specs", type=Path, default=None, metavar="JSON",
                       help="your own device spec file (wattbench-device-specs/1), matched first: MFU and report")
    knobs = sweep.add_argument_group("settings (each a list such as 200,300 or a range min:max:step; the default "
                                     "setting always runs first, as the reference)")
    knobs.add_argument("--power-limits", default=None, metavar="W", help="GPU power limits in W (NVML; needs root)")
    knobs.add_argument("--sm-clocks", default=None, metavar="MHZ",
                       help="locked GPU SM clocks in MHz, among the GPU's supported clocks (NVML; needs root)")
    knobs.add_argument("--mem-clocks", default=None, metavar="MHZ",
                       help="locked GPU memory clocks in MHz (NVML; needs root)")
    knobs.add_argument("--cpu-power-limits", default=None, metavar="W",
                       help="long-term RAPL limit of every CPU package in W (writable powercap sysfs)")
    knobs.add_argument("--cpu-max-freqs", default=None, metavar="MHZ",
                       help="cpufreq scaling_max_freq of every CPU in MHz (writable cpufreq sysfs)")
    sweep.add_argument("--resume", type=Path, default=None, metavar="RUN.json",
                       help="continue the sweep cut short in RUN.json: its settings, device, preset and -k; the "
                            "settings it finished are kept")
    sweep.add_argument("--restore", action="store_true",
                       help="restore the originals recorded in this host's state file "
                            "($XDG_STATE_HOME/wattbench, else ~/.local/state/wattbench), then remove it")
    sweep.add_argument("--dry-run", action="store_true",
                       help="list the benchmarks and settings that would run and the estimated time; run nothing")
    sweep.add_argument("--device-name", default=None, metavar="NAME",
                       help="with --dry-run: the GPU to plan for (default on a host without a GPU: an H100 80GB)")
    sweep.add_argument("pytest_args", nargs=argparse.REMAINDER,
                       help="after '--': run options, e.g. -- --wattbench-energy-window 2 --wattbench-idle 0")

    selfcheck = commands.add_parser("selfcheck", help="measure wattbench's own accuracy and overhead")
    selfcheck.add_argument("check", choices=["power-accuracy", "sampler-overhead", "gate", "kernels", "gpu",
                                              "compile"])
    selfcheck.add_argument("--device", default=None,
                           help="kernels, sampler-overhead: cpu, cuda or cuda:N (default: cuda:0 if present, "
                                "else cpu); gpu: cuda or cuda:N")
    selfcheck.add_argument("--preset", default=None,
                           help="kernels: quick (the default) or full (adds the larger GPU shapes); compile: the "
                                "registry preset whose GPU cases to compile (default full: all of them)")
    selfcheck.add_argument("--arch", default="sm_80,sm_89,sm_90",
                           help="compile: comma-separated targets (default sm_80,sm_89,sm_90)")
    selfcheck.add_argument("--only", default=None, metavar="REGEX",
                           help="compile: only the registry cases and API probes whose label matches, "
                                "e.g. 'gemm|api matmul'")
    selfcheck.add_argument("--specs", type=Path, default=None, help="kernels: your own device spec file, matched first")
    selfcheck.add_argument("--budget", type=float, default=None, metavar="SECONDS",
                           help="gpu: the whole run's time budget, 480 by default (a step whose limit no longer "
                                "fits is not run)")
    selfcheck.add_argument("--steps", default=None, metavar="STEP,...", help="gpu: only these steps (default: all)")
    selfcheck.add_argument("--out", type=Path, default=Path("results"),
                           help="gpu: results folder (the evidence goes to OUT/selfcheck-gpu)")
    return parser


def _run(args) -> int:
    from wattbench import runner
    from wattbench.config import from_command

    extra = args.pytest_args[1:] if args.pytest_args[:1] == ["--"] else args.pytest_args
    if args.dry_run:
        return _dry_run(args, extra)
    if args.device_name:
        raise UsageError("--device-name only plans: give it with --dry-run")
    if args.devices:
        return _run_devices(args, extra)
    config, pytest_args = from_command(args.device, args.preset, args.keyword, extra, resume=args.resume,
                                       power_replay=args.power_replay, specs=args.specs)
    return runner.run(runner.placed(config, args.out, args.save_trace), pytest_args, report=args.report)


def _dry_run(args, extra: list[str]) -> int:
    """The plan of `wattbench run` with these flags (wattbench.estimate), on stdout; nothing runs."""
    from wattbench import estimate
    from wattbench.config import from_command

    if args.devices or args.resume:
        raise UsageError("--dry-run plans one device's run: it takes no --devices or --resume")
    config, _ = from_command(args.device, args.preset, args.keyword, extra, specs=args.specs,
                             find_device=lambda spec: estimate.planning_device(spec, args.device_name))
    print(estimate.dry_run(config))
    return 0


def _run_devices(args, extra: list[str]) -> int:
    import torch

    from wattbench import multi
    from wattbench.config import from_command

    if args.device or args.resume or args.save_trace or args.power_replay:
        raise UsageError("--devices runs every listed GPU itself: it takes no --device, --resume, --save-trace "
                         "or --power-replay")
    workers = multi.plan_workers(args.devices, torch.cuda.device_count())
    config, pytest_args = from_command(multi.WORKER_DEVICE, args.preset, args.keyword, extra, specs=args.specs)
    return multi.run_workers(workers, config, args.out / "runs", pytest_args)


def _report(args) -> int:
    from wattbench.report import write_report
    from wattbench.report.cost import parse_device_prices
    from wattbench.specs import load_specs

    cost = {"electricity_per_kwh": args.electricity_price, "currency": args.currency, "pue": args.pue,
            "carbon_g_per_kwh": args.carbon_intensity, "max_latency_ms": args.max_latency_ms,
            "device_per_hour": parse_device_prices(args.device_price)}
    specs = load_specs(args.specs)  # a bad file: one line, before anything is written
    return show_report(write_report(args.runs, args.out, specs, args.trace, skip_bad=args.skip_bad,
                                    force=args.force, cost=cost))


def show_notes(notes) -> None:
    """Notes on the inputs (run files left out or without a record) on stderr."""
    for note in notes:
        print(f"wattbench: {note}", file=sys.stderr)


def show_report(report) -> int:
    """A written report (report.render.WrittenReport): its notes on stderr, the plots left out and the files
    written on stdout; 0 (a report that could not be written raised UsageError instead)."""
    show_notes(report.notes)
    for name, why in report.skipped_plots.items():
        print(f"wattbench: plot {name} skipped: {why}")
    print(f"wattbench: report of {report.records} record(s) from {report.runs} run file(s) in {report.out}:")
    for path in report.files:
        print(f"  {path}")
    return 0


def _select(args) -> int:
    """The ranking on stdout: 0 when a device qualifies, 1 when none does, or when the metric asked for was
    not measured and --allow-fallback is not given. With --precisions, the workload's crossover maps: 0 when
    there is one, else 1."""
    from wattbench.report import select_devices
    from wattbench.report.select import format_precisions, format_ranking, select_precisions

    if args.precisions:
        maps, file_notes = select_precisions(args.runs, args.workload, skip_bad=args.skip_bad)
        show_notes(file_notes)
        print(format_precisions(maps, args.workload))
        return 0 if maps else 1
    ranking = select_devices(args.runs, args.workload, args.max_latency_ms, args.metric, skip_bad=args.skip_bad,
                             max_ttft_ms=args.max_ttft_ms, max_tpot_ms=args.max_tpot_ms)
    show_notes(ranking.file_notes)
    if ranking.fallback and not args.allow_fallback:
        print(f"wattbench: not ranked by {args.metric}: {ranking.fallback}; pass --allow-fallback to rank by "
              "units_per_s instead", file=sys.stderr)
        return 1
    if ranking.fallback:
        print(f"wattbench: note: {ranking.fallback}: ranked by units_per_s instead", file=sys.stderr)
    print(format_ranking(ranking))
    return 0 if ranking.entries else 1


def _gate(args) -> int:
    from wattbench.gate import run_gate

    result = run_gate(args.baseline, args.current, time_threshold=args.time_threshold,
                      energy_threshold=args.energy_threshold, strict=args.strict, force=args.force,
                      markdown_out=args.markdown, junit_out=args.junit)
    return show_gate(result, args.markdown, args.junit)


def show_gate(result, markdown_out: Path | None = None, junit_out: Path | None = None, write=print) -> int:
    """The gate's verdict on the console, then its reports: 0 pass, 1 regression (the pytest plugin shows it too)."""
    from wattbench.gate.output import console_table, write_reports

    write(console_table(result))
    write_reports(result, markdown_out, junit_out)
    return result.exit_code


def _baseline(args) -> int:
    from wattbench.gate import save_baseline

    if args.baseline_command is None:
        raise UsageError("baseline: give what to do: `wattbench baseline save RUN.json [--name N] [--force]`")
    print("\n".join(save_baseline(args.run, args.name, force=args.force).lines()))
    return 0


def _devices(args) -> int:
    import torch

    from wattbench import device as devices
    from wattbench.power import describe_sources

    found = [devices.detect("cpu")]
    found += [devices.detect(f"cuda:{i}") for i in range(torch.cuda.device_count())]
    if not torch.cuda.is_available():
        print("compute: no CUDA device (torch.cuda.is_available() is False): Triton runs through its interpreter")
    for dev in found:
        print(f"device {dev.spec}: {dev.name}")
        if dev.type == "cuda":
            print(f"  toolchain  {_driver_note(dev.index)}")
        for status in describe_sources(dev):
            mark = "yes" if status.available else "no "
            print(f"  power source {status.name:<7} {mark}  {status.detail}")
    return 0


def _driver_note(index: int) -> str:
    """Whether this host's driver loads the cubins Triton builds for GPU `index` (a too-old one fails every launch)."""
    import torch

    from wattbench.selfcheck.compilation import driver_note
    from wattbench.environment import nvidia_driver_version

    major, minor = torch.cuda.get_device_capability(index)
    driver = nvidia_driver_version()
    return driver_note(driver if isinstance(driver, str) else None, 10 * major + minor)


def _sweep(args) -> int:
    """A sweep (the run options, then every setting, checked before anything runs), or --restore."""
    from wattbench.config import from_command
    from wattbench.power import knobs
    from wattbench.sweep import resumed_plan, run_sweep

    asked = {knob.argument: getattr(args, knob.argument) for knob in knobs.KNOBS.values()
             if getattr(args, knob.argument) is not None}
    if args.restore:
        if asked or args.keyword or args.device or args.preset or args.pytest_args or args.resume:
            raise UsageError("--restore only puts the originals back: give it alone (`wattbench sweep --restore`)")
        return knobs.restore_leftover()
    extra = args.pytest_args[1:] if args.pytest_args[:1] == ["--"] else args.pytest_args
    if args.resume:
        if asked or args.dry_run:
            raise UsageError("--resume continues the sweep its run file planned: give it no settings or --dry-run")
        asked = resumed_plan(args.resume)
    if args.dry_run:
        from wattbench import estimate

        config, _ = from_command(args.device, args.preset, args.keyword, extra, specs=args.specs,
                                 find_device=lambda spec: estimate.planning_device(spec, args.device_name))
        print(estimate.dry_run(config, estimate.sweep_settings(asked)))
        return 0
    if args.device_name:
        raise UsageError("--device-name only plans: give it with --dry-run")
    config, pytest_args = from_command(args.device, args.preset, args.keyword, extra, resume=args.resume,
                                       specs=args.specs)
    if (config.resume and not args.resume) or config.save_trace:
        raise UsageError("a sweep writes its own run file per setting: it takes no --wattbench-resume, "
                         "--wattbench-run-file or --wattbench-save-trace")
    plan = knobs.plan_sweep(config.device, sysfs_root=config.power.sysfs_root, **asked)
    return run_sweep(config, plan, pytest_args, args.out, report=args.report, resume=args.resume)


def _selfcheck(args) -> int:
    if args.check == "gpu":
        from wattbench.selfcheck.gpu import main as gpu_selfcheck

        return gpu_selfcheck(args.device, args.out, args.budget, args.steps)
    if args.check == "kernels":
        from wattbench.selfcheck.kernels import check_kernels

        report = check_kernels(args.device, args.preset or "quick", args.specs)
        print(report.text())
        return 0 if report.passed else 1
    if args.check == "compile":
        from wattbench.selfcheck.compilation import run_check

        check = run_check([arch.strip() for arch in args.arch.split(",") if arch.strip()], args.preset or "full",
                          args.only)
        print(check.text())
        return check.exit_code
    if args.check == "gate":
        from wattbench.selfcheck.gate import gate_error_rates

        return gate_error_rates()
    from wattbench.selfcheck import power as selfcheck

    if args.check == "power-accuracy":
        return selfcheck.power_accuracy()
    from wattbench.device import detect

    return selfcheck.sampler_overhead(device=detect(args.device))


def main(argv: list[str] | None = None) -> int:
    def command() -> int:
        args = build_parser().parse_args(argv)
        if not (args.command == "sweep" and args.restore):
            from wattbench.power.knobs import warn_if_leftover

            warn_if_leftover()  # a sweep that died left this host's device settings changed
        handler = {"run": _run, "report": _report, "select": _select, "gate": _gate, "baseline": _baseline,
                   "devices": _devices, "sweep": _sweep, "selfcheck": _selfcheck}[args.command]
        return handler(args)

    return exit_code(command)


def exit_code(command) -> int:
    """Run `command`; bad input is one line on stderr and exit code 2, an interruption 130, never a traceback."""
    try:
        return command()
    except UsageError as exc:
        print(f"wattbench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("wattbench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
