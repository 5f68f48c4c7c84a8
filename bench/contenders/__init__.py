"""The systems the peer bench (bench/peers.py) runs side by side, one module each, and the job
and timing they share (kit)."""
