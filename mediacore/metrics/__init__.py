"""Metrics and health: ``[metrics] listen`` serves /metrics, /healthz and /readyz.

``collector`` turns the counters that the sans-IO planes keep into
Prometheus families at scrape time; ``rtp`` keeps RTP totals past the end of
each session; ``health`` decides liveness and readiness; ``http`` is the
small, strict HTTP listener; ``service`` wires them on the server's loop.
The planes below never import this package (sip/ stays pure).
"""
