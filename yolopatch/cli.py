"""The command line: parse options, call yolopatch.commands.<verb>, map errors to exit codes.

This is the only module that knows about Typer. Exit codes: 0 done (or nothing to do), 1 refused or
failed, 2 usage error. Errors print as one line; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import gc
import sys
from pathlib import Path
from typing import Annotated, Any, Callable, List, Optional

import typer
from typer.core import TyperGroup

from yolopatch import __version__
from yolopatch.targets.detect import SUPPORTED_LINE

# click's base exception, wherever this typer takes click from (typer >= 0.28 vendors it).
ClickException = next(base for base in typer.BadParameter.__mro__ if base.__name__ == "ClickException")

USAGE_EXIT = 2


def usage_line(error: "ClickException") -> str:
    """A click/typer usage error as one line: ``no such option: --foo (try yolopatch apply --help)``."""
    message = " ".join(error.format_message().split()).rstrip(".")
    message = message[:1].lower() + message[1:]
    context = getattr(error, "ctx", None)
    if context is not None and context.command.get_help_option(context) is not None:
        names = context.help_option_names
        message += f" (try {context.command_path} {'--help' if '--help' in names else names[0]})"
    return message


class OneLineErrors(TyperGroup):
    """Typer's group, with usage errors printed on one line (like every other error) and exit 2,
    and a reader that goes away (``| head -1``) ending the command quietly."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        from yolopatch import ui

        try:
            result = super().main(*args, standalone_mode=False, **kwargs)
        except ClickException as error:
            if type(error).__name__ == "NoArgsIsHelpError":  # bare `yolopatch`: the help, as typer shows it
                help_text = error.format_message()
                if help_text.strip():
                    ui.stdout.file.write(help_text + "\n")
                ui.flush()
                sys.exit(USAGE_EXIT)
            ui.error(usage_line(error))
            sys.exit(USAGE_EXIT)  # raised while parsing the command line: all of them are usage errors
        except typer.Abort:
            ui.error("aborted")
            sys.exit(1)
        except BrokenPipeError:
            ui.silence_stdout()
            sys.exit(1)
        code = result if isinstance(result, int) else 0
        sys.exit(code if ui.flush() else code or 1)


app = typer.Typer(
    name="yolopatch",
    cls=OneLineErrors,
    help="Put attention modules into YOLOv5 correctly, and take them out again byte for byte.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

_debug = False

RepoOption = Annotated[Path, typer.Option("--repo", help="YOLOv5 or Ultralytics tree (found upward from here).")]
InstalledOption = Annotated[bool, typer.Option(
    "--installed", help="Allow an installed ultralytics (site-packages); upgrades wipe the changes.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
DryRunOption = Annotated[bool, typer.Option("--dry-run", help="Print the diff, write nothing.")]


def _split(values: Optional[List[str]]) -> Optional[List[str]]:
    """``--at p4,p5 --at sppf`` -> ["p4", "p5", "sppf"]."""
    if not values:
        return None
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def run(command: Callable[[], int]) -> None:
    """Run a command function; translate yolopatch errors into one line and an exit code."""
    from yolopatch.errors import YolopatchError
    from yolopatch import ui

    try:
        code = command()
    except YolopatchError as error:
        if _debug:
            raise
        ui.error(str(error))
        code = error.exit_code
    except KeyboardInterrupt:
        ui.error("interrupted; nothing half-written was left behind")
        code = 130
    except BrokenPipeError:  # the reader went away (`| head -1`): stop quietly, as other CLI tools do
        ui.silence_stdout()
        code = 1
    except Exception as error:  # noqa: BLE001 - last resort: one line, traceback with --debug
        if _debug:
            raise
        ui.error(f"internal error: {type(error).__name__}: {error} (run again with --debug for the traceback)")
        code = 1
    raise typer.Exit(code)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"yolopatch {__version__}")
        raise typer.Exit(0)


@app.callback(help=f"Put attention modules into YOLO codebases correctly, and take them out again byte for byte. "
                   f"Supported: {SUPPORTED_LINE}.")
def main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    global _debug
    _debug = debug


@app.command("list")
def list_command(repo: Annotated[Optional[Path], typer.Option("--repo", help="Also show each module's state in this tree.")] = None,
                 as_json: JsonOption = False,
                 verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Everything about every module (as `show`).")] = False,
                 ) -> None:
    """Show the module catalogue as a table (and, in a tree, what is applied)."""
    from yolopatch.commands.list_modules import list_modules

    run(lambda: list_modules(repo, as_json, verbose=verbose))


@app.command()
def show(name: Annotated[str, typer.Argument(metavar="MODULE", help="Module key, class name or alias.")],
         repo: Annotated[Optional[Path], typer.Option("--repo", help="Also show the module's state in this tree.")] = None,
         as_json: JsonOption = False) -> None:
    """Everything about one module: paper, YAML row, parameters, constraints."""
    from yolopatch.commands.show import show as show_command

    run(lambda: show_command(name, repo, as_json))


@app.command()
def apply(
    modules: Annotated[List[str], typer.Argument(help="Module keys, class names or aliases, or `all`.")],
    repo: RepoOption = Path("."),
    dry_run: DryRunOption = False,
    replace: Annotated[bool, typer.Option("--replace", help="Swap hand-pasted or hand-edited versions for yolopatch's.")] = False,
    no_variants: Annotated[bool, typer.Option("--no-variants", help="Do not write variant YAMLs.")] = False,
    base: Annotated[Optional[List[str]], typer.Option("--base", help="Base model YAML(s) for variants.")] = None,
    scales: Annotated[Optional[str], typer.Option("--scales", help="Variants of yolov5{n,s,m,l,x}.yaml, e.g. n,s,m.")] = None,
    at: Annotated[Optional[List[str]], typer.Option("--at", help="Placement(s): p3,p4,p5,p6, sppf, backbone:K, layer:I.")] = None,
    clone: Annotated[bool, typer.Option("--clone", help="Clone YOLOv5 into --repo first when it does not exist.")] = False,
    installed: InstalledOption = False,
) -> None:
    """Insert modules into models/common.py and parse_model, and write variant YAMLs."""
    from yolopatch.commands.apply import apply as apply_command

    def command() -> int:
        if clone and not repo.exists():
            from yolopatch.commands.clone import clone as clone_command

            code = clone_command(repo)
            if code:
                return code
        return apply_command(repo, modules, dry_run=dry_run, replace=replace, variants=not no_variants,
                             bases=base or (), scales=_split([scales] if scales else None), positions=_split(at),
                             installed=installed)

    run(command)


@app.command()
def revert(
    modules: Annotated[Optional[List[str]], typer.Argument(help="Modules to take out (default: all).")] = None,
    repo: RepoOption = Path("."),
    dry_run: DryRunOption = False,
    force: Annotated[bool, typer.Option("--force", help="Also take out code and variants edited by hand.")] = False,
    installed: InstalledOption = False,
) -> None:
    """Take yolopatch's modules (and their variant YAMLs) out of the tree, byte for byte."""
    from yolopatch.commands.revert import revert as revert_command

    run(lambda: revert_command(repo, modules or [], dry_run=dry_run, force=force, installed=installed))


app.command("unpatch", help="Alias of revert.")(revert)


@app.command()
def status(repo: RepoOption = Path("."), as_json: JsonOption = False, installed: InstalledOption = False) -> None:
    """Show the tree's codebase, layout and version, and what yolopatch applied."""
    from yolopatch.commands.status import status as status_command

    run(lambda: status_command(repo, as_json, installed))


@app.command()
def variant(
    modules: Annotated[List[str], typer.Argument(help="Applied modules to write variants for, or `all`.")],
    repo: RepoOption = Path("."),
    dry_run: DryRunOption = False,
    base: Annotated[Optional[List[str]], typer.Option("--base", help="Base model YAML(s).")] = None,
    scales: Annotated[Optional[str], typer.Option("--scales", help="Variants of yolov5{n,s,m,l,x}.yaml, e.g. n,s,m.")] = None,
    at: Annotated[Optional[List[str]], typer.Option("--at", help="Placement(s): p3,p4,p5,p6, sppf, backbone:K, layer:I.")] = None,
    installed: InstalledOption = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print each variant's old -> new layer index map as JSON "
                                                         "(for code with hard-coded layer numbers).")] = False,
) -> None:
    """Write variant YAMLs for modules already applied, without touching Python files."""
    from yolopatch.commands.variant import variant as variant_command

    run(lambda: variant_command(repo, modules, bases=base or (), scales=_split([scales] if scales else None),
                                positions=_split(at), dry_run=dry_run, installed=installed, as_json=as_json))


SourceOption = Annotated[str, typer.Option("--source", help="auto (git, else the package index), git or pypi.")]
RefOption = Annotated[Optional[str], typer.Option(
    "--ref", show_default=False,
    help="YOLOv5: release tag v5.0, v6.0, v6.1, v6.2 or v7.0 (default v7.0). Ultralytics: a release (8.4.190, the "
         "default), a line's newest (8.3.x), or a branch such as main (git only). git: any ref.")]
CloneTargetOption = Annotated[str, typer.Option("--target", help="Codebase: yolov5 or ultralytics.")]
CloneRefOption = Annotated[Optional[str], typer.Option(
    "--ref", show_default=False,
    help="YOLOv5: release tag v5.0, v6.0, v6.1, v6.2 or v7.0 (default v7.0). Ultralytics: a release (8.4.190, the "
         "default), a line's newest (8.3.x), or a branch such as main (git only). YOLOv7: main (the default, the only "
         "ref the package index has) or a full 40-character commit. git: any ref.")]


@app.command()
def clone(
    dest: Annotated[Optional[Path], typer.Argument(
        help="Where the tree goes (must not exist, or be empty). Default: ./yolov5, ./ultralytics or ./yolov7.",
        show_default=False)] = None,
    ref: CloneRefOption = None,
    source: SourceOption = "auto",
    target: Annotated[str, typer.Option("--target", help="Codebase: yolov5, ultralytics or yolov7.")] = "yolov5",
) -> None:
    """Get a YOLOv5, Ultralytics or YOLOv7 tree: a shallow git clone, or the same code from the package index."""
    from yolopatch.commands.clone import clone as clone_command, default_dest

    run(lambda: clone_command(dest or default_dest(target), ref=ref, source=source, target=target))


@app.command()
def demo(
    dest: Annotated[Optional[Path], typer.Option(
        "--dest", show_default=False,
        help="Working tree (cloned if absent, reused if a tree). Default: ./yolov5-demo or ./ultralytics-demo.")] = None,
    ref: RefOption = None,
    source: SourceOption = "auto",
    img: Annotated[int, typer.Option("--img", help="Image size for the GFLOPs and latency measurements.")] = 640,
    runs: Annotated[int, typer.Option("--runs", min=0, help="Timed forwards per model for the latency (0: none).")] = 3,
    target: CloneTargetOption = "yolov5",
) -> None:
    """The main job in one command: get YOLOv5 (or Ultralytics), apply every module, verify base and variants."""
    from yolopatch.commands.demo import default_dest, demo as demo_command

    run(lambda: demo_command(dest or default_dest(target), ref=ref, source=source, img=img, runs=runs,
                             target=target))


CHECK_FORMATS = ("text", "json", "github")


def _check_format(value: str) -> str:
    if value not in CHECK_FORMATS:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(CHECK_FORMATS)}")
    return value


@app.command()
def check(
    repo: RepoOption = Path("."),
    build: Annotated[bool, typer.Option("--build", help="Also build every generated variant (needs torch).")] = False,
    output_format: Annotated[str, typer.Option("--format", metavar="[text|json|github]", callback=_check_format,
                                               help="Output: text lines, a JSON document, or GitHub annotations.")] = "text",
    installed: InstalledOption = False,
    python: Annotated[Optional[str], typer.Option("--python", help="Interpreter whose `import ultralytics` is checked, and that --build uses (default: this one).")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Check everything again even when nothing changed since the last clean check.")] = False,
) -> None:
    """Check that everything yolopatch added is present, intact and consistent; writes nothing.

    Ultralytics trees: also that the interpreter imports this tree's ultralytics, not another copy.
    Exit 0: no drift; 1: findings; 2: check could not run (bad option, no YOLOv5 or Ultralytics tree at
    --repo, --build without a working torch, internal error).
    """
    from yolopatch.commands.check import check as check_command
    from yolopatch.errors import YolopatchError

    def command() -> int:
        try:
            return check_command(repo, build=build, output_format=output_format, installed=installed,
                                 python=python, use_cache=not no_cache)
        except (YolopatchError, BrokenPipeError):
            raise
        except Exception as error:  # noqa: BLE001 - exit 1 means drift; a crash must not look like drift
            raise YolopatchError(f"internal error: {type(error).__name__}: {error} "
                                 f"(run again with --debug for the traceback)", exit_code=2) from error

    run(command)


@app.command()
def verify(
    cfgs: Annotated[Optional[List[Path]], typer.Argument(metavar="CFG...", help="Model YAMLs (default: every variant yolopatch generated).",
                                                         show_default=False)] = None,
    repo: RepoOption = Path("."),
    python: Annotated[Optional[str], typer.Option("--python", help="Interpreter that builds the models (default: this one).")] = None,
    img: Annotated[int, typer.Option("--img", help="Image size for GFLOPs and latency.")] = 640,
    runs: Annotated[int, typer.Option("--runs", min=0, help="Timed forwards per model (alternating with its base) for the median latency (0: none).")] = 7,
    scale: Annotated[Optional[str], typer.Option("--scale", help="Ultralytics: scale (n, s, m, l, x) of YAMLs whose name has none, such as yolov8-soca.yaml (default: n).",
                                                 show_default=False)] = None,
    as_json: JsonOption = False,
) -> None:
    """Build each variant and its base with the tree's own code (YOLOv5 or Ultralytics): params, GFLOPs, latency, deltas.

    Runs offline in a subprocess; exit 1 if any model fails to build, run forward or backward.
    """
    from yolopatch.commands.verify import verify as verify_command

    run(lambda: verify_command(repo, cfgs or [], python=python, img=img, as_json=as_json, runs=runs, scale=scale))


@app.command()
def weights(
    checkpoint: Annotated[Path, typer.Argument(metavar="BASE.pt", help="Checkpoint of the base model (or of a variant).")],
    to: Annotated[List[Path], typer.Option("--to", help="Variant YAML(s) yolopatch generated, e.g. models/yolov5s-soca.yaml, yolov8-soca.yaml or cfg/training/yolov7-tiny-soca.yaml.")],
    out: Annotated[Optional[Path], typer.Option("--out", help="File to write (one --to only; default: <variant>.pt beside BASE.pt; Ultralytics: yolov8n-soca.pt).")] = None,
    scale: Annotated[Optional[str], typer.Option("--scale", help="Ultralytics: the scale to build the variant at (default: the checkpoint's).")] = None,
    repo: RepoOption = Path("."),
    python: Annotated[Optional[str], typer.Option("--python", help="Interpreter that loads the checkpoint (default: this one).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing output file.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Write a checkpoint for a variant: every base layer's tensors moved to its new index.

    The inserted layers are freshly initialised; the report gives tensors transferred per layer,
    names any shape mismatch, and the count train.py --weights (YOLOv5, YOLOv7) or YOLO(cfg).load
    (Ultralytics) will report. Runs offline in a subprocess with the tree's own code; exit 1 if a
    checkpoint could not be written or checked.
    """
    from yolopatch.commands.weights import weights as weights_command

    run(lambda: weights_command(repo, checkpoint, to, out=out, python=python, force=force, as_json=as_json,
                                scale=scale))


def entry() -> None:  # pragma: no cover - the console script and `python -m yolopatch`
    # libcst allocates hundreds of thousands of short-lived, acyclic nodes per parsed file; at the default
    # threshold (700 allocations) the cyclic collector runs thousands of times a command, about 0.2 s of a
    # 1.5 s `apply` (benchmarks/cli.py). Collections still run, a hundred times less often.
    gc.set_threshold(100_000, 50, 100)
    app(prog_name="yolopatch")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(entry())
