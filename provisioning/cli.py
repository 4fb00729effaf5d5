"""The one `sentryline` command: sub-commands per role."""

from __future__ import annotations

import typer

from bench.central_common import CLI_SETTINGS as CENTRAL_BENCH
from bench.central_common import ingest_cli as bench_central_ingest
from bench.central_common import latency_cli as bench_central_latency
from bench.central_common import workers_cli as bench_central_workers
from bench.modbus_fleet import cli as bench_modbus_fleet
from central.cli import app as central_app
from central.rules_cli import app as rules_app
from drivers.ble.cli import app as ble_app
from drivers.cli import bench_app, driver_app, sensor_app
from drivers.coap.cli import app as coap_app
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
app.add_typer(driver_app, name="driver")
sensor_app.add_typer(coap_app, name="coap")
sensor_app.add_typer(ble_app, name="ble")
app.add_typer(sensor_app, name="sensor")
bench_app.command("modbus-fleet")(bench_modbus_fleet)
bench_app.command("central-ingest", context_settings=CENTRAL_BENCH)(bench_central_ingest)
bench_app.command("central-latency", context_settings=CENTRAL_BENCH)(bench_central_latency)
bench_app.command("central-workers", context_settings=CENTRAL_BENCH)(bench_central_workers)
app.add_typer(bench_app, name="bench")
app.add_typer(rules_app, name="rules")
app.command("demo")(demo)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
