"""TaskSync's benchmarks against real peers. Run them with `make bench`; see README.md."""
