"""The team queue: one queue for several hosts, in PostgreSQL (see README, "Team queue")."""
