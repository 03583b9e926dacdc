"""What every command shares: the ``deconvviz`` group, one-line errors, the shared options
(model, weights, device, dpi, method, target) and the method-list parser.

Start-up is instant: this module imports only click and deconvviz's light modules (the zoo's
names, the choices, the method table, output checks); torch and matplotlib are imported by a
command once its arguments have been checked.
"""
from __future__ import annotations

import contextlib
import functools
import signal
import sys
import threading
import warnings
from typing import List, Optional

import click

from .. import method_table
from ..choices import (
    MODES,
    PRECISIONS,
    check_precision,
    check_weights,
    parse_list,
)
from ..data.zoo import list_models
from ..errors import ArgumentError, Interrupted, first_line

__all__ = ["cli", "main", "friendly", "model_option", "weights_option", "device_option",
           "dpi_option", "method_option", "scan_weights_option", "image_root_option", "target_options", "method_list",
           "load_images_and_model", "check_layer", "check_layers"]



class _InputError(click.ClickException):
    exit_code = 2


class _Interrupted(click.ClickException):
    exit_code = 130  # the shell's code for Ctrl-C


class _OneLineErrors(click.Group):
    """Every error becomes one ``error:`` line (click's own usage errors included)."""

    def main(self, args=None, prog_name=None, **extra):
        extra.pop("standalone_mode", None)  # errors are always handled here
        terminated = []
        with _sigterm_as_interrupt(terminated):
            try:
                result = super().main(args, prog_name=prog_name, standalone_mode=False,
                                      **extra)
            except click.exceptions.Abort:  # Ctrl-C outside a command (click's own)
                click.echo("error: terminated" if terminated else f"error: {_CTRL_C}",
                           err=True)
                sys.exit(_TERMINATED if terminated else _Interrupted.exit_code)
            except click.ClickException as exc:
                click.echo(f"error: {exc.format_message()}", err=True)
                sys.exit(_TERMINATED if terminated else exc.exit_code)
        sys.exit(result if isinstance(result, int) else 0)


_TERMINATED = 143  # the shell's code for SIGTERM (128 + 15)
_CTRL_C = "interrupted (Ctrl-C)"


@contextlib.contextmanager
def _sigterm_as_interrupt(terminated: list):
    """While a command runs, SIGTERM (``kill``, a scheduler's time limit) stops it as Ctrl-C
    does: a scan saves its checkpoint, an atlas removes its ``.partial`` folder, training
    saves its state; the exit code is then 143. Outside the main thread (where Python
    cannot catch signals) nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        terminated.append(signum)
        raise KeyboardInterrupt("terminated (SIGTERM)")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _discard_stdout() -> None:
    """Point standard output at /dev/null, so that the interpreter's last flush of what the
    closed pipe did not take raises nothing."""
    import os
    import sys

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout without a descriptor (e.g. a test's buffer)
        pass


def friendly(command):
    """Turn exceptions into one-line errors unless --debug is given."""

    @functools.wraps(command)
    def wrapper(*args, debug: bool = False, **kwargs):
        with warnings.catch_warnings():
            if not debug:
                warnings.showwarning = _one_line_warning
            try:
                ctx = click.get_current_context(silent=True)
                precision = ctx.meta.get(_PRECISION, "exact") if ctx is not None else "exact"
                if precision == "exact":  # the API's default: nothing to set here
                    return command(*args, **kwargs)
                from ..engine.precision import computing

                with computing(precision):  # every deconvviz call below inherits it
                    return command(*args, **kwargs)
            except click.ClickException:
                raise
            except Interrupted as exc:  # saved where it was; the message says --resume
                if debug:
                    raise
                raise _Interrupted(_one_line(exc)) from None
            except KeyboardInterrupt as exc:  # every command: exit 130 (143 for SIGTERM)
                if debug:
                    raise
                raise _Interrupted("terminated" if str(exc).startswith("terminated")
                                   else _CTRL_C) from None
            except ValueError as exc:  # every deconvviz input error is a ValueError
                if debug:
                    raise
                raise _InputError(_one_line(exc)) from None
            except BrokenPipeError:  # `deconvviz models | head`: the reader has gone
                _discard_stdout()
                raise SystemExit(141) from None  # as a shell reports a broken pipe
            except OSError as exc:  # a file that vanished, a disk that filled up
                if debug:
                    raise
                raise click.ClickException(f"{exc.strerror or exc}"
                                           + (f": {exc.filename}" if exc.filename else "")
                                           ) from None
            except Exception as exc:
                if debug:
                    raise
                raise click.ClickException(f"{type(exc).__name__}: {_one_line(exc)}") from None

    return click.option("--debug", is_flag=True, help="Show tracebacks.")(wrapper)


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    if len(lines) > 1 and lines[0].startswith("Caught ") and "DataLoader worker" in lines[0]:
        # re-raised from a DataLoader worker: the original message is the last line
        return lines[-1].split(": ", 1)[-1]
    return first_line(exc)


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    """deconvviz's own warnings, one line each; other libraries' (deprecations, a missing
    glyph) are not the user's business unless --debug shows everything."""
    if getattr(category, "__module__", "").startswith("deconvviz"):
        click.echo(f"warning: {message}", err=True)


def _checked(check):
    """A click callback running a light check of deconvviz's (no torch): a bad value is one
    ``error:`` line with exit code 2 before any model is built."""

    def callback(ctx, param, value):
        try:
            return check(value, param) if value is not None else value
        except ValueError as error:  # every deconvviz input error
            raise _InputError(str(error)) from None

    return callback


def _weights(value, param):
    check_weights(value)
    return value


def _layer(value, param):
    if not value.strip():
        raise ArgumentError(f"{param.opts[0]} is empty; give a layer's alias or module path "
                            f"(`deconvviz layers --model NAME` lists them)")
    return value


def _layers(value, param):
    parse_list(value, param.opts[0])
    return value


check_layer = _checked(_layer)  # callback of an option naming one layer
check_layers = _checked(_layers)  # and of one naming a comma list of layers


def weights_option(f):
    return click.option("--weights", default="default", show_default=True, metavar="WEIGHTS",
                        callback=_checked(_weights),
                        help="'default' (torchvision's ImageNet weights; timm's pretrained "
                             "ones for timm:NAME), 'none' (random), or a checkpoint FILE.")(f)


def scan_weights_option(f):
    """``--weights`` of the commands that redraw a scan: by default the scan's own."""
    return click.option("--weights", default=None, metavar="WEIGHTS",
                        callback=_checked(_weights),
                        help="The weights to redraw with [default: the scan's own]: 'default' "
                             "(torchvision's ImageNet weights; timm's pretrained ones for "
                             "timm:NAME), 'none' (random), or a checkpoint FILE. They must be "
                             "the scan's (the same digest): use it where the scan's "
                             "checkpoint has moved.")(f)


def image_root_option(f):
    """``--image-root`` of the commands that reopen a scan's photos."""
    return click.option("--image-root", default=None, metavar="FOLDER",
                        type=click.Path(file_okay=False),
                        help="Where the scan's photos are now, if they moved: FOLDER takes "
                             "the place of the folder that held them all (their deepest "
                             "common folder); a photo that no longer gives its scanned "
                             "values is refused.")(f)


def dpi_option(f):
    return click.option("--dpi", default=200, show_default=True, type=click.IntRange(10, 2400),
                        help="Resolution of raster output (10 to 2400).")(f)


_PRECISION = "deconvviz.precision"


class _Precision(click.ParamType):
    """``--precision``: checked by :func:`deconvviz.choices.check_precision`."""

    name = "precision"

    def get_metavar(self, param, ctx=None):
        return "[" + "|".join(PRECISIONS) + "]"

    def convert(self, value, param, ctx):
        try:
            return check_precision(value)
        except ArgumentError as error:
            self.fail(str(error), param, ctx)


def _remember_precision(ctx, param, value):
    ctx.meta[_PRECISION] = value


def device_option(f):
    """``--device`` and ``--precision`` (the command runs at that precision, see
    :mod:`deconvviz.engine.precision`)."""
    f = click.option("--precision", type=_Precision(), default="exact", show_default=True,
                     expose_value=False, callback=_remember_precision,
                     help="'exact': float32 throughout, TF32 off on CUDA (the CPU's "
                          "answers); 'tf32': TensorFloat-32 on GPUs with tensor cores, "
                          "faster and not exact (docs: On a GPU).")(f)
    return click.option("--device", default="auto", show_default=True,
                        help="'cpu', 'cuda', 'cuda:1', ... or 'auto' (cuda when available).")(f)


class _ReversePass(click.ParamType):
    """A reverse-pass method of the method table, read when the option is parsed (so a
    method registered with deconvviz.engine.register_method is a choice too)."""

    name = "method"

    def get_metavar(self, param, ctx=None):
        return "[" + "|".join(method_table.names(method_table.REVERSE)) + "]"

    def convert(self, value, param, ctx):
        try:
            return method_table.check(value, method_table.REVERSE)
        except ArgumentError as error:
            self.fail(str(error), param, ctx)


def method_option(f):
    return click.option("--method", type=_ReversePass(), default="deconvnet",
                        show_default=True,
                        help="The reverse pass: the deconvnet, guided backprop, the plain "
                             "gradient, or another registered one.")(f)


def model_option(f):
    return click.option("--model", "-m", required=True, metavar="NAME",
                        help=f"A zoo model ({', '.join(list_models())}), any torchvision "
                             f"classification model as torchvision:NAME (e.g. "
                             f"torchvision:efficientnet_b0), or timm:NAME when timm is "
                             f"installed.")(f)


@click.group(cls=_OneLineErrors, invoke_without_command=True,
             context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="deconvviz")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Zeiler-Fergus deconvnet visualisations of CNN features.

    \b
    Examples:
      deconvviz show --model zfnet --layer conv3 photo.jpg
      deconvviz layers --model vgg16
    """
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())


def target_options(f):
    for option in reversed([
        click.option("--target", default=None, metavar="CLASS",
                     help="A class index or ImageNet class name [default: each image's "
                          "top-1 class]."),
        click.option("--layer", "-l", default=None, callback=check_layer,
                     help="Explain a unit of this layer instead of a class."),
        click.option("--feature", default=None, type=click.IntRange(0),
                     help="The unit's feature (with --layer)."),
        click.option("--mode", type=click.Choice(MODES), default="max", show_default=True,
                     help="The unit's strongest activation, or its whole map."),
    ]):
        f = option(f)
    return f


def method_list(spec: Optional[str], default) -> List[str]:
    """``--methods``: a comma list, ``all`` (every method of the table), or the default."""
    if spec is not None and spec.strip() == "all":
        return method_table.names()
    names = parse_list(spec, "--methods") if spec else list(default)
    for name in names:
        method_table.get(name)
    return names


def load_images_and_model(model: str, weights: str, device: str, images: List[str]):
    """The model on its device and the images as one batch (after the arguments are checked:
    this is where torch is imported)."""
    import torch

    from ..data.devices import resolve_device
    from ..data.images import load_image
    from ..data.zoo import load_model

    dev = resolve_device(device)
    net_model = load_model(model, weights=weights).to(dev)
    return net_model, torch.cat([load_image(p, net_model)[0] for p in images]).to(dev)


def main(argv: Optional[List[str]] = None) -> None:
    """Console-script entry point."""
    cli.main(args=argv, prog_name="deconvviz")
