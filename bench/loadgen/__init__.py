"""The load generator: one separate process, driven by JSON lines on stdin (see __main__.py).

It is built to cost the machine less than the server it measures: picows sockets on uvloop,
frames handled in one callback each, the send timestamp found with bytes.find rather than a JSON
parse. It reports its own CPU time with every measurement, so a result can be checked for a
generator that was the bottleneck.
"""
