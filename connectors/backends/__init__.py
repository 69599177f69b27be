"""Model backends, one module each (registered by name in ``connectors.base.BACKENDS``), and the
modules they share. Importing this package imports none of them: each needs its own extra."""
