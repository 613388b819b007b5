"""The service: settings, CLI, app wiring and lifecycle, read and admin API, widget, metrics."""
