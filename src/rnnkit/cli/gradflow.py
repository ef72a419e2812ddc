"""`rnnkit gradflow`: placeholder replaced below."""
import click


@click.command()
def gradflow() -> None:
    """Gradient flow through time (not yet)."""
    raise click.ClickException("gradflow is not implemented yet")
