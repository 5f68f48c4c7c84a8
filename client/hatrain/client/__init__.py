"""hatrain-client: sync configs and datasets over SSH, submit jobs, follow them live."""
