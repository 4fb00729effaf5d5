"""The one `sentryline` command: sub-commands per role."""

from __future__ import annotations

import typer

from central.cli import app as central_app
from drivers.sim.cli import app as sim_app
from gateway.cli import app as gateway_app
from gateway.cli import outbox_app
from provisioning.demo import demo

app = typer.Typer(
    help="Sentryline: IoT gateway and edge toolkit for urban-safety monitoring.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # tracebacks must never print keys or passwords
)
app.add_typer(gateway_app, name="gateway")
app.add_typer(central_app, name="central")
app.add_typer(sim_app, name="sim")
app.add_typer(outbox_app, name="outbox")
app.command("demo")(demo)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
