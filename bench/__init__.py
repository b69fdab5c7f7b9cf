"""TaskSync's benchmarks against real peers (issue 8). Run them with `make bench`; see README.md."""
