"""The six workloads, one module each; each returns a JSON-ready dict."""
