"""hatrain-client: sync, submit and follow jobs (in progress; see the README)."""
