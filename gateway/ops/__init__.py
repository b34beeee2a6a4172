"""Operations: Prometheus metrics, the /status report, readiness, the operator endpoints
and the logging set-up; they read counters through read-only interfaces."""
