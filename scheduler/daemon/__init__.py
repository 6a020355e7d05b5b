"""The daemon: APScheduler wiring, slot planning, the state lock, sd_notify, retention, assembly."""
