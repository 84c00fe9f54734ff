"""The benchmark suite: latency, throughput, memory and rewind cost per memory mode."""
