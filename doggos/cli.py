"""The command line: embed in the foreground, manage background runs, make the offline demo kit."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from doggos.base import console, units
from doggos.base.config import DEFAULT_MODEL, DEVICES, RunConfig, user_messages
from doggos.runs import commands as run_commands
from doggos.runs.commands import ProgressPrinter, format_progress, summary  # noqa: F401 (the CLI's, re-exported)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return args.handler(args)
    except ValueError as error:  # ConfigError(s), SourceError, ModelError: the user can fix these
        for line in user_messages(error):  # every problem, each naming its field, with the CLI's advice
            print(f"error: {line}", file=sys.stderr)
        return 2
    except KeyError as error:  # RunNotFound
        print(f"error: {error}", file=sys.stderr)
        return 2
    except Exception as error:  # e.g. a Ray cluster that cannot be reached: a message, not a stack trace
        print(f"error: {type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}",
              file=sys.stderr)
        return 1


RUN_HELP = ("a run folder (as embed --out writes), or a run under the runs root: its id, any part of it only that "
            "run's id has (e.g. 145918), or its name as the dashboard shows it, or the start of it (e.g. digits)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m doggos", description="CLIP image embeddings with Ray Data.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    embed = commands.add_parser("embed", help="run the pipeline in the foreground and write Parquet into --out")
    _add_run_options(embed)
    embed.add_argument("--out", required=True, help="folder for the Parquet, manifest, failures and log")
    embed.add_argument("--overwrite", action="store_true", help="replace a finished run already in --out")
    embed.add_argument("--verbose", action="store_true",
                       help="also show Ray's, its workers' and the libraries' output (always in <out>/output.txt)")
    embed.set_defaults(handler=_embed)

    kit = commands.add_parser("demo-kit", help="write offline demo data: digit images and a random-weights CLIP")
    kit.add_argument("folder", help="where to write it (e.g. demo)")
    kit.add_argument("--per-class", type=int, default=30, help="images per digit class (default 30)")
    kit.set_defaults(handler=_demo_kit)

    run_commands.add_parser(commands, _add_run_options, config_from_args)

    search = commands.add_parser("search", help="the run's images most like an image file, one of its rows, or a text")
    search.add_argument("run", metavar="RUN", help=RUN_HELP)
    query = search.add_mutually_exclusive_group(required=True)
    query.add_argument("--image", help="an image file: embedded with the run's model, as the pipeline does")
    query.add_argument("--row", help="a row of the run (0-based): its neighbours, itself left out")
    query.add_argument("--name", metavar="FILE", help="one of the run's images by file name (label/name where two "
                                                      "labels hold that name): its neighbours, itself left out")
    query.add_argument("--text", help="words, embedded by the run's model's text tower as typed (no template added)")
    search.add_argument("-k", default="10", help="how many results, 1 to 1000 (default 10)")
    search.add_argument("--label", action="append", default=[], help="only images with this label (repeatable)")
    search.add_argument("--json", action="store_true", help="a JSON list, best first: rank, row, path, class, score")
    search.add_argument("--runs-dir", help="runs root for a run id (default: $DOGGOS_RUNS_DIR or ./runs in the project)")
    search.set_defaults(handler=_search)

    quality = commands.add_parser("quality", help="which labels look wrong: suspects, confused labels, duplicates")
    quality.add_argument("run", metavar="RUN", help=RUN_HELP)
    quality.add_argument("--k", default="10", help="neighbours per image, 1 to 100 (default 10)")
    quality.add_argument("--template", default=None, help='zero-shot prompt per label (default "a photo of a {label}.")')
    quality.add_argument("--top", type=int, default=20, help="suspects and duplicate pairs to list (default 20)")
    quality.add_argument("--json", action="store_true", help="one JSON object: suspects, duplicates, labels, counts")
    quality.add_argument("--runs-dir", help="runs root for a run id (default: $DOGGOS_RUNS_DIR or ./runs in the project)")
    quality.set_defaults(handler=_quality)

    from doggos.explore import label_commands  # light, as compare: its heavy imports wait until an action runs

    label_commands.add_parser(commands)

    from doggos.explore import compare  # light: its heavy imports wait until a comparison runs

    compare.add_parser(commands)

    bench = commands.add_parser("bench", help="measure images/s: plain-process ceiling, doggos defaults, tutorial settings")
    from doggos.bench.command import add_arguments as add_bench_arguments  # one list of the bench's options (~0.1 s)

    add_bench_arguments(bench)
    bench.set_defaults(handler=_bench)

    drive = commands.add_parser("drive")  # internal: the detached driver of a background run
    drive.add_argument("run_dir")
    drive.add_argument("--resume", action="store_true")  # go on from the rows a failed attempt kept
    drive.set_defaults(handler=lambda args: _drive(args.run_dir, args.resume))
    return parser


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", required=True, help="local folder or s3://bucket/prefix of <label>/<image> files")
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"Hugging Face CLIP id or local folder (default {DEFAULT_MODEL})")
    parser.add_argument("--device", default="auto", choices=DEVICES, help="auto picks cuda when the cluster has a GPU")
    parser.add_argument("--batch-size", help="images per forward pass (default: 16 on CPU, 64 on GPU)")
    parser.add_argument("--concurrency", help="embedder actors (default: auto, from the cluster's CPUs/GPUs)")
    parser.add_argument("--limit", help="embed only N images, sampled evenly across labels (round robin; seeded: the "
                                        "same source and N pick the same images)")
    parser.add_argument("--ray-address", help="existing Ray cluster (default: $RAY_ADDRESS, else a local Ray)")
    parser.add_argument("--s3-endpoint", help="S3-compatible endpoint URL (default: $AWS_ENDPOINT_URL, else AWS)")
    parser.add_argument("--fp16", action="store_true", help="half precision on cuda")
    parser.add_argument("--no-map", dest="projection", action="store_false",
                        help="skip the UMAP map at the end (the dashboard computes it when first opened)")
    parser.add_argument("--no-quality", dest="quality", action="store_false",
                        help="skip the label-quality check at the end (the dashboard or `quality` computes it later)")
    parser.add_argument("--reuse", metavar="RUN",
                        help="a finished run, named as every command names one (its folder, its id, a part of the id, "
                             "its name or the start of it): carry over its rows for unchanged files, embed the rest")


def config_from_args(args: argparse.Namespace, output: str | None) -> RunConfig:
    """Text from the command line straight into RunConfig, whose validation names any bad field."""
    return RunConfig(
        source=args.source,
        output=output,
        model=args.model,
        device=args.device,
        batch_size=None if args.batch_size in (None, "auto") else args.batch_size,
        concurrency=None if args.concurrency in (None, "auto") else args.concurrency,
        limit=args.limit,
        ray_address=args.ray_address,
        s3_endpoint=args.s3_endpoint,
        fp16=args.fp16,
        projection=args.projection,
        quality=args.quality,
        reuse=_reuse_folder(args),
    )


def _reuse_folder(args: argparse.Namespace) -> str | None:
    """--reuse as a run folder: a folder, or a run id under the runs root (whether it can be reused: preflight)."""
    if not getattr(args, "reuse", None):
        return None
    from doggos.runs.manager import resolve_run

    return str(resolve_run(args.reuse, getattr(args, "runs_dir", None), field="reuse", finished=False).path)


def _embed(args: argparse.Namespace) -> int:
    from doggos.base.rundir import RunDir
    from doggos.explore.post_run import steps_for
    from doggos.pipeline import dataset, preflight
    from doggos.runs import driver

    config = config_from_args(args, args.out).with_absolute_paths()
    run_dir = RunDir(args.out)
    if (run_dir.manifest.exists() or run_dir.status.exists()) and not args.overwrite:
        print(f"error: output: {run_dir.path} already holds a run; choose a new folder or pass --overwrite", file=sys.stderr)
        return 2
    listing = preflight.check(config)
    run_dir.path.mkdir(parents=True, exist_ok=True)
    # Ray's, its workers' and the libraries' output goes to the run's output.txt; the terminal keeps doggos' lines.
    with console.everything_else_to(run_dir.output, echo=args.verbose) as terminal:
        _quiet_ray()
        terminal.say(f"embedding {units.count(len(listing.paths), 'image')} from {config.source} into {run_dir.path}")
        printer = ProgressPrinter(terminal.err)
        run_dir.cancel_request.unlink(missing_ok=True)  # an earlier cancelled run's request must not touch this one
        driver.cancel_on_sigterm()
        try:
            # The summary as soon as the run has succeeded; the local Ray's shutdown (seconds) comes after it.
            driver.run(config, on_progress=printer, listing=listing, steps=steps_for(config),
                       on_finished=lambda manifest: print(summary(manifest), file=terminal.out, flush=True))
        except (driver.Cancelled, KeyboardInterrupt):
            terminal.say("\ncancelled; nothing was published")
            return 130
        except ValueError as error:  # a setting found wrong once the run started (a Ray address that let no one in)
            for line in user_messages(error):
                terminal.say(f"\nerror: {line}")
            return 2
        except Exception as error:  # PipelineError, or Ray's own (an actor that died, a lost node): status.json has it
            message = str(error) if isinstance(error, dataset.PipelineError) else f"{type(error).__name__}: {error}"
            terminal.say(f"\nerror: {message}")
            return 1
    return 0


def _demo_kit(args: argparse.Namespace) -> int:
    from doggos.pipeline.demo import make_demo_kit

    kit = make_demo_kit(args.folder, per_class=args.per_class)
    print(f"images: {kit['source']}\nmodel:  {kit['model']}  (RANDOM WEIGHTS: shows the mechanics, not semantic quality)")
    print(f"try:    python -m doggos embed --source {kit['source']} --model {kit['model']} --out runs/demo")
    return 0


def _search(args: argparse.Namespace) -> int:
    import json

    from doggos.explore import search
    from doggos.pipeline import encoders
    from doggos.runs.manager import finished_manifest, resolve_run

    run_dir = resolve_run(args.run, args.runs_dir)
    manifest = finished_manifest(run_dir)
    index = search.load_index(run_dir)
    if args.row is not None:
        hits = search.by_row(index, search.check_row(index, args.row), args.k, args.label)
    elif args.name is not None:
        hits = search.by_row(index, search.row_of_name(index.paths, args.name), args.k, args.label)
    elif args.image is not None:
        try:
            data = Path(args.image).expanduser().read_bytes()
        except OSError as error:
            raise search.SearchError("image", f"cannot read {args.image}: {error.strerror or error}") from None
        hits = search.by_image(index, encoders.image_encoder(manifest.model), data, args.k, args.label)
    else:
        hits = search.by_text(index, encoders.text_encoder(manifest.model), args.text, args.k, args.label)
    if manifest.random_weights:
        print("warning: this run's model has RANDOM WEIGHTS (the demo kit's): the results carry no meaning",
              file=sys.stderr)
    if args.json:
        print(json.dumps([hit.to_dict() for hit in hits], indent=2, ensure_ascii=False))
        return 0
    print(f"{'rank':>4}  {'score':>6}  {'label':<20}  path")
    for hit in hits:
        print(f"{hit.rank:>4}  {units.score(hit.score):>6}  {hit.label:<20}  {hit.path}")
    print(search.label_summary(hits), file=sys.stderr)
    return 0


def _quality(args: argparse.Namespace) -> int:
    import json

    from doggos.explore import label_review, quality, quality_step
    from doggos.runs.manager import finished_manifest, resolve_run

    run_dir = resolve_run(args.run, args.runs_dir)
    manifest = finished_manifest(run_dir)
    params = quality.QualityParams(k=args.k, **({"template": args.template} if args.template is not None else {}))
    if not quality_step.QUALITY.result(run_dir, params).exists():
        print(f"checking labels of {units.count(manifest.rows, 'image')} (k={params.k}) ...", file=sys.stderr,
              flush=True)
        with console.everything_else_to(quality_step.QUALITY.log_file(run_dir, params)):  # Ray's lines go there
            _quiet_ray()
            quality_step.QUALITY.run(run_dir, params)
    # The stored check seen through the label decisions in effect (`labels`): effective labels everywhere.
    first, now, state = label_review.load(run_dir, params)
    report = quality_step.report_json(now, top=args.top, decisions=state.decisions)
    if now.label_checks_note:  # one label: "no suspects" and a perfect zero-shot would say nothing about the labels
        print(f"note: {now.label_checks_note}", file=sys.stderr)
    if manifest.random_weights:
        print("warning: this run's model has RANDOM WEIGHTS (the demo kit's): the findings carry no meaning",
              file=sys.stderr)
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
        return 0
    review = label_review.review(first, now, state) if state.decisions else None
    print(quality_text(report, review.purity_text() if review else None))
    return 0


def quality_text(report: dict, purity: str | None = None) -> str:
    """The quality report for a terminal: counts (and `purity`, how label decisions moved it), suspects, duplicates,
    then labels by purity. A heading comes only with the lines it heads: a list cut by --top says so."""
    counts = report["counts"]
    zero_shot = report["zero_shot"]
    decided = (f"; {units.count(counts['decisions'], 'label decision')} in effect ({units.count(counts['reviewed'])} "
               f"reviewed, {units.count(counts['excluded'])} excluded)") if counts.get("decisions") else ""
    pairs = counts["exact_duplicate_pairs"] + counts["near_duplicate_pairs"]
    checks = report.get("label_checks") or {"available": True}
    # One label: neighbours cannot disagree with it, so "0 likely mislabeled" and "suspects: none" would be no finding.
    mislabeled = (f"{units.count(counts['likely_mislabeled'])} likely mislabeled "
                  f"({units.count(counts['strongest_suspects'])} also by zero-shot)" if checks["available"]
                  else f"mislabeled {units.DASH} (label checks need two or more labels)")
    lines = [f"{units.count(counts['images'], 'image')}, {units.count(counts['labels'], 'label')}: {mislabeled}, "
             f"{units.count(counts['exact_duplicate_pairs'])} exact and "
             f"{units.count(counts['near_duplicate_pairs'])} near duplicate {units.plural(pairs, 'pair')} "
             f"({units.count(counts['cross_label_duplicate_pairs'])} across labels)" + decided,
             *([purity] if purity else []),
             "zero-shot: " + (f"accuracy {units.share(zero_shot['accuracy'])}" if zero_shot["available"]
                              and zero_shot["accuracy"] is not None else f"not available ({zero_shot['reason']})"),
             "", _heading("suspects", "most suspicious first", report["suspects"], counts["likely_mislabeled"])
             if checks["available"] else f"suspects: {units.DASH} ({checks.get('reason') or 'one label'})"]
    for s in report["suspects"]:
        lines.append(f"  {units.share(s['agreement']):>5} agree  filed {s['class']!r}, "
                     f"neighbours say {s['suggested']!r}"
                     + (f", zero-shot says {s['zero_shot']!r}" if s.get("zero_shot") else "") + f"  {s['path']}")
    lines += ["", _heading("duplicates", "pairs, across labels first", report["duplicates"], pairs)]
    for d in report["duplicates"]:
        lines.append(f"  {d['kind']:<5} {units.score(d['similarity'], digits=4)}"
                     f"{'  ACROSS LABELS' if d['cross_label'] else ''}  {d['paths'][0]}  =  {d['paths'][1]}")
    lines += ["", "labels (least pure first):"]
    for label in sorted(report["labels"], key=lambda row: (row["purity"], row["label"])):
        lines.append(f"  {units.share(label['purity']):>5} pure  {units.count(label['images'], 'image'):>12}  "
                     f"{label['label']}" + (f"  (confused with {label['confused_with']})" if label.get("confused_with")
                                            else ""))
    return "\n".join(lines)


def _heading(what: str, order: str, listed: list, found: int) -> str:
    """'suspects: none'; 'suspects (most suspicious first):' above the whole list; '… (20 of 163, most suspicious
    first):' above a list --top cut; 'suspects: 163 found, none listed (--top)' where nothing follows."""
    if not found:
        return f"{what}: none"
    if not listed:
        return f"{what}: {units.count(found)} found, none listed (--top)"
    shown = "" if len(listed) >= found else f"{units.count(len(listed))} of {units.count(found)}, "
    return f"{what} ({shown}{order}):"


def _bench(args: argparse.Namespace) -> int:
    from doggos.bench.command import main as bench_main

    logging.basicConfig(level=logging.WARNING)
    return bench_main(args)


def _drive(run_dir: str, resume: bool) -> int:
    from doggos.explore.post_run import steps_for
    from doggos.runs.manager import drive

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout)
    _quiet_ray()
    return drive(run_dir, steps_for, resume)


def _quiet_ray() -> None:
    import ray.data

    # Our own progress line replaces Ray's bars, which garble logs and pipes with carriage returns.
    ray.data.DataContext.get_current().enable_progress_bars = False
