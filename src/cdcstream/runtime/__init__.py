"""Process-level helpers: retry/backoff, signals, systemd notification."""
