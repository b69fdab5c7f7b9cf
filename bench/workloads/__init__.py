"""The six workloads of issue 8, one module each; each returns a JSON-ready dict."""
