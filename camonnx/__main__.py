"""``python -m camonnx``: the command line (the same as the ``camonnx`` script)."""

from camonnx.cli import main

main(prog_name="camonnx")
