"""Subcommands of the ``vsphere-kale`` CLI, one module each (registered in ``cli.py``)."""
