"""hatrain-agent: a durable, GPU-aware queue that runs Axolotl jobs and streams their events."""
