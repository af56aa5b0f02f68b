"""devctl: the click CLI users run on the bastion; one module per command group."""
