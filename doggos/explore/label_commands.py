"""The `labels` command: show, relabel, keep, exclude, undo, accept, export and apply label decisions from a terminal.

The same modules as the dashboard's buttons (`doggos.base.decisions`, `doggos.explore.label_review`,
`doggos.explore.label_tree`); every argument is checked before anything is recorded or written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from doggos.base import units


def add_parser(commands) -> argparse.ArgumentParser:
    """Add `labels RUN ACTION …` to an argparse subparsers object; each action's handler is set as `handler`."""
    run_help = ("a run folder (as embed --out writes), or a run under the runs root: its id, a part of it only that "
                "run's id has (e.g. 145918), or its name as the dashboard shows it, or the start of it (e.g. digits)")
    runs_dir_help = "runs root for a run id (default: $DOGGOS_RUNS_DIR or ./runs in the project)"
    labels = commands.add_parser("labels", help="label decisions: show, relabel, keep, exclude, undo, accept, export, "
                                                "apply (write the corrected tree)",
                                 description="Label decisions, kept in the run's decisions.jsonl (the run's Parquet "
                                             "never changes). PATH: an image's path as the run stores it, or its row "
                                             "(0-based). Guide: docs/labels.md.")
    labels.add_argument("run", metavar="RUN", help=run_help)
    labels.add_argument("--runs-dir", help=runs_dir_help)
    actions = labels.add_subparsers(dest="action", metavar="ACTION", required=True)

    def action(name: str, text: str, handler) -> argparse.ArgumentParser:
        parser = actions.add_parser(name, help=text, description=text)
        parser.add_argument("--runs-dir", default=argparse.SUPPRESS, help=runs_dir_help)  # also after the action
        parser.set_defaults(handler=handler)
        return parser

    show = action("show", "the decisions in effect, one per image (undone ones are not listed)", _show)
    show.add_argument("--json", action="store_true", help="a JSON list of {path, label, new_label, decision, at}")
    relabel = action("relabel", "file images under another label", _record)
    relabel.add_argument("paths", nargs="+", metavar="PATH", help="an image's path as stored in the run, or its row")
    relabel.add_argument("--to", required=True, metavar="LABEL", help="the new label (one folder name: no '/')")
    for name, text in (("keep", "say the images' labels are right: they leave the suspects"),
                       ("exclude", "leave the images out of the dataset (the check, the export, the corrected tree)")):
        action(name, text, _record).add_argument("paths", nargs="+", metavar="PATH",
                                                        help="an image's path as stored in the run, or its row")
    undo = action("undo", "take back the last N actions (an action: one command or one button press)", _undo)
    undo.add_argument("count", nargs="?", default="1", metavar="N", help="how many actions (default 1)")
    accept = action("accept", "relabel the label check's top suspects to the labels their neighbours suggest",
                    _accept)
    accept.add_argument("--top", type=int, default=None, help="only the N most suspicious (default: every suspect)")
    accept.add_argument("--min-agreement", type=float, default=None, metavar="F",
                        help="only suggestions at least this share of the neighbours agree on, 0 to 1 (default: any)")
    accept.add_argument("--k", default="10", help="the label check's neighbours per image (default 10)")
    accept.add_argument("--template", default=None,
                        help='the label check\'s zero-shot prompt, as given to `quality` (default "a photo of a {label}.")')
    export = action("export", "a CSV of every image: path, label (the folder's), new_label, decision (both empty "
                              "where no decision is in effect)", _export)
    export.add_argument("file", metavar="FILE", help="the CSV file to write (FILE.csv)")
    export.add_argument("--overwrite", action="store_true", help="replace FILE if it exists (default: refuse)")
    apply = action("apply", "write the corrected dataset as a new tree DIR/<label>/<file>: effective labels, "
                            "excluded images left out, name clashes renamed name-2.jpg; the source is never "
                            "touched", _apply)
    apply.add_argument("--to", required=True, metavar="DIR", help="a new local folder or s3://bucket/prefix")
    how = apply.add_mutually_exclusive_group()
    how.add_argument("--copy", dest="mode", action="store_const", const="copy", help="copy the files (the default)")
    how.add_argument("--link", dest="mode", action="store_const", const="link",
                     help="symlink to the source files (local source and destination only)")
    apply.set_defaults(mode="copy")
    apply.add_argument("--overwrite", action="store_true", help="replace a non-empty DIR (default: refuse)")
    apply.add_argument("--s3-endpoint", help="S3-compatible endpoint for an s3:// DIR (default: $AWS_ENDPOINT_URL, "
                                             "else AWS)")
    return labels


def _run(args: argparse.Namespace):
    from doggos.runs.manager import finished_manifest, resolve_run

    run_dir = resolve_run(args.run, args.runs_dir)
    return run_dir, finished_manifest(run_dir)


def _show(args: argparse.Namespace) -> int:
    import json

    from doggos.base import decisions

    run_dir, _ = _run(args)
    state = decisions.state(run_dir)
    effects = list(state.effects.values())
    if args.json:
        print(json.dumps([effect.to_dict() for effect in effects], indent=2, ensure_ascii=False))
        return 0
    if not effects:
        print(f"no label decisions in effect for run {run_dir.id}")
        return 0
    width = min(max(len(_label_change(e)) for e in effects), 40)
    print(f"{'decision':<8}  {'label':<{width}}  {'at':<25}  path")
    for effect in effects:
        print(f"{effect.decision:<8}  {_label_change(effect):<{width}}  {effect.at:<25}  {effect.path}")
    tally = {d: sum(e.decision == d for e in effects) for d in decisions.DECISIONS}
    print(f"{units.count(len(effects), 'image')} with a decision in effect: "
          + ", ".join(f"{units.count(n)} {d}" for d, n in tally.items() if n)
          + f" ({units.count(state.decisions, 'decision')} in {units.count(len(state.actions), 'action')})")
    return 0


def _label_change(effect) -> str:
    return f"{effect.folder_label} → {effect.label}" if effect.decision == "relabel" else effect.folder_label


def _record(args: argparse.Namespace) -> int:
    from doggos.base import decisions

    run_dir, _ = _run(args)
    new_label = decisions.check_label(args.to, "to") if args.action == "relabel" else None
    images = resolve_images(run_dir, args.paths)  # every PATH checked before anything is recorded
    action = decisions.record(run_dir, args.action, images, new_label, source="cli")
    print(f"recorded: {decisions.describe(run_dir, action)} (action {action}; `labels RUN undo` takes it back)")
    return 0


def resolve_images(run_dir, given: list[str]) -> list:
    """The run's images that PATH arguments name (a path as stored, else a row number), in the order given, each once;
    a ValueError naming PATH lists every one that names no image."""
    import os

    import pyarrow as pa
    import pyarrow.compute as pc

    from doggos.base import decisions, store

    table = store.read_columns(run_dir, ["path", "class"])
    paths, rows = table.column("path"), table.num_rows
    found = pc.index_in(pa.array(given, pa.string()), value_set=paths).to_pylist()
    images, unknown, seen = [], [], set()
    for text, row in zip(given, found):
        if row is None and text.strip().isdigit():
            row = int(text) if int(text) < rows else None
        elif row is None and "://" not in text:  # a local path typed another way (relative, with ~ or ..)
            row = pc.index(paths, os.path.abspath(os.path.expanduser(text))).as_py()
            row = None if row < 0 else row
        if row is None:
            unknown.append(text)
        elif row not in seen:
            seen.add(row)
            images.append(decisions.Image(row, paths[row].as_py(), table.column("class")[row].as_py()))
    if unknown:
        listed = ", ".join(repr(text) for text in unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5
                                                                  else "")
        raise decisions.DecisionError("PATH", f"{listed} name{'s' if len(unknown) == 1 else ''} no image of run "
                                              f"{run_dir.id}: give a path as the run stores it (as `labels RUN show` "
                                              f"and `search` print them) or a row from 0 to {rows - 1}; nothing was "
                                              "recorded")
    return images


def _undo(args: argparse.Namespace) -> int:
    from doggos.base import decisions

    run_dir, _ = _run(args)
    try:
        count = int(args.count)
    except ValueError:
        raise decisions.DecisionError("N", f"must be a whole number of actions, 1 or more (got {args.count!r})") \
            from None
    for action in decisions.undo(run_dir, count, source="cli"):
        print(f"undone: {decisions.describe(run_dir, action)} (action {action})")
    return 0


def _accept(args: argparse.Namespace) -> int:
    from doggos.explore import label_review, quality

    run_dir, manifest = _run(args)
    template = {"template": args.template} if args.template is not None else {}
    _, now, _ = label_review.load(run_dir, quality.QualityParams(k=args.k, **template))
    if manifest.random_weights:
        print("warning: this run's model has RANDOM WEIGHTS (the demo kit's): its suggestions carry no meaning",
              file=sys.stderr)
    action, chosen = label_review.accept(run_dir, now, args.top, args.min_agreement, source="cli")
    if action is None:
        print("no suggestion to accept: no suspect left" + (" with that agreement" if args.min_agreement is not None
                                                           else ""))
        return 0
    print(f"relabelled {units.count(len(chosen), 'image')} to the suggested labels "
          f"(action {action}; `labels RUN undo` takes them all back):")
    for row in chosen.itertuples():
        print(f"  {row.label} → {row.suggested}  ({units.share(row.support)} of neighbours agree)  {row.path}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from doggos.explore import label_tree

    run_dir, _ = _run(args)
    rows = label_tree.export_csv(run_dir, args.file, overwrite=args.overwrite)
    print(f"wrote {units.count(rows, 'row')} (path, label, new_label, decision) to "
          f"{Path(args.file).expanduser().absolute()}")
    return 0


def _apply(args: argparse.Namespace) -> int:
    from doggos.explore import label_tree

    run_dir, _ = _run(args)
    report = label_tree.apply(run_dir, args.to, args.mode, args.overwrite, args.s3_endpoint)
    verb = "linked" if report.mode == "link" else "copied"
    print(f"{verb} {units.count(report.images, 'image')} into {report.dest}"
          + (" (replacing what was there)" if report.replaced else ""))
    for label, count in report.labels.items():
        print(f"  {units.count(count):>6}  {label}")
    print(f"left out {units.count(report.excluded, 'excluded image')}")
    if report.renamed:
        print(f"renamed {units.count(len(report.renamed), 'clashing file name')}:")
        for source, place in report.renamed:
            print(f"  {source}  →  {place}")
    return 0
