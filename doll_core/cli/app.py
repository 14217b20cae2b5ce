"""The root ``doll`` command: global options, sub-commands, and user-error handling.

A :class:`~doll_core.errors.DollError` raised anywhere below a command becomes one line on
stderr (``error: ...``) and exit code 2; ``doll --debug ...`` shows the traceback instead.
Failures at run time that the user's command did not cause exit with code 1, also as one
line: a full disk, and an exception raised inside a plugin's code (named with its
distribution; finished work is kept, so the same command with ``--resume`` continues).
A path the user gave that cannot be written (read-only, a file where a folder is expected)
is a user error: one line naming it, exit code 2.
"""

from __future__ import annotations

import errno
from typing import Any, NoReturn

import typer
from typer.core import TyperGroup, TyperOption

from doll_core._version import __version__
from doll_core.atomic import disk_full_error
from doll_core.cli import (
    data_cmd,
    doctor_cmd,
    evaluate_cmd,
    explain_cmd,
    info_cmd,
    labels_cmd,
    localization_cmd,
    plugins_cmd,
    run_cmd,
    segment_cmd,
    train_cmd,
)
from doll_core.errors import DollError

_display_type = TyperOption.display_type_rich


def _flag_shows_no_type(self: TyperOption, ctx: Any) -> str | None:
    """``--resume`` takes no value, so ``--help`` shows no ``<bool>`` after it (typer
    0.29 shows one for every boolean flag, which reads as if the flag took a value)."""
    return None if self.is_flag else _display_type(self, ctx)


TyperOption.display_type_rich = _flag_shows_no_type  # type: ignore[method-assign]

USER_ERROR_EXIT_CODE = 2
#: The machine or third-party code, not the user: a full disk, a plugin that raised.
ENVIRONMENT_ERROR_EXIT_CODE = 1


class DollGroup(TyperGroup):
    """A command group that turns user errors into one line and exit code 2."""

    def invoke(self, ctx: typer.Context) -> Any:  # type: ignore[override]  # typer vendors click
        try:
            return super().invoke(ctx)
        except DollError as exc:
            if isinstance(ctx.obj, dict) and ctx.obj.get("debug"):
                raise
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(USER_ERROR_EXIT_CODE) from None
        except Exception as exc:
            if isinstance(ctx.obj, dict) and ctx.obj.get("debug"):
                raise
            place = unusable_path_error(exc)
            if place is not None:
                typer.echo(f"error: {place}", err=True)
                raise typer.Exit(USER_ERROR_EXIT_CODE) from None
            full = disk_full_error(exc)
            if full is None:
                _raise_naming_the_plugin(exc)
            where = f" while writing {full.filename}" if full.filename else ""
            typer.echo(
                f"error: the disk is full{where} ({full.strerror}). Files are written "
                "atomically, so finished work is intact: free some space and run the same "
                "command again with --resume where it has one.",
                err=True,
            )
            raise typer.Exit(ENVIRONMENT_ERROR_EXIT_CODE) from None


#: What a user's path can be that stops a write: read-only, a file where a folder is
#: expected (or a folder where a file is), a name taken.
_UNUSABLE_PATH = {
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
    errno.ENOTDIR: "a file is where a folder is expected",
    errno.EISDIR: "a folder is where a file is expected",
    errno.EEXIST: "a file or folder of that name is in the way",
    errno.ENAMETOOLONG: "the name is too long",
}


def unusable_path_error(exc: BaseException) -> str | None:
    """One line for an ``OSError`` (``exc``, or one it was raised from) that names a path
    the user gave or chose to write under, and a reason that is the user's to fix."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if (
            isinstance(current, OSError)
            and current.errno in _UNUSABLE_PATH
            and current.filename is not None
        ):
            return (
                f"cannot use {current.filename}: {_UNUSABLE_PATH[current.errno]} "
                f"({current.strerror}); fix the path or its permissions (for an output, "
                "choose another --out)"
            )
        current = current.__cause__ or current.__context__
    return None


def _raise_naming_the_plugin(exc: Exception) -> NoReturn:
    """One line and exit code 1 when ``exc`` came from a plugin's code; otherwise re-raise
    (a bug of DoLL itself keeps its traceback)."""
    from doll_core import registry as registry_module

    if registry_module._default is None:  # no plugin was loaded, so none ran: --help, usage
        raise exc
    from doll_core.blame import plugin_behind

    blame = plugin_behind(exc, registry_module.get_registry())
    if blame is None:
        raise exc
    typer.echo(
        f"error: {blame.describe(exc)}. The run stopped; finished work is kept: fix, "
        "update or replace the plugin, then run the same command again (with --resume "
        "where it has one). doll --debug ... shows the traceback.",
        err=True,
    )
    raise typer.Exit(ENVIRONMENT_ERROR_EXIT_CODE) from None


app = typer.Typer(
    cls=DollGroup,
    name="doll",
    help="DoLL: pre-train segmentation models on the explanations of chest X-ray classifiers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"doll {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    version: bool = typer.Option(
        False,
        "--version",
        callback=_print_version,
        is_eager=True,
        help="Print the version and exit.",
    ),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks of user errors."),
) -> None:
    """DoLL: diagnosis-oriented localization labels for chest X-ray segmentation."""
    ctx.obj = {"debug": debug}


app.command("info")(info_cmd.info)
app.add_typer(plugins_cmd.plugins_app, name="plugins")
app.add_typer(data_cmd.data_app, name="data")
app.command("train-classifier")(train_cmd.train_classifier_command)
app.command("explain")(explain_cmd.explain_command)
app.command("explain-scores")(explain_cmd.explain_scores_command)
app.command("evaluate")(evaluate_cmd.evaluate_command)
app.add_typer(labels_cmd.labels_app, name="labels")
app.add_typer(localization_cmd.localization_app, name="localization")
app.command("pretrain")(segment_cmd.pretrain_command)
app.command("finetune")(segment_cmd.finetune_command)
app.command("compare-inits")(segment_cmd.compare_command)
app.command("convert-weights")(segment_cmd.convert_weights_command)
app.command("run")(run_cmd.run_command)
app.command("plan")(run_cmd.plan_command)
app.command("ablate")(run_cmd.ablate_command)
app.command("report")(run_cmd.report_command)
app.command("doctor")(doctor_cmd.doctor_command)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point (``doll``)."""
    try:
        app(args=argv, prog_name="doll")
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise SystemExit(130) from None
